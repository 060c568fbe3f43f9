"""A weight matrix in its compute layout.

`dense` keeps a contiguous float32 (n_out, n_in) copy: BLAS speed, 4 bytes/parameter.
`packed` keeps the quantized bytes and dequantizes into a reused scratch buffer per call.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pyllama.gguf_file import TensorInfo
from pyllama.quant import dequantize

F32 = np.ndarray[Any, np.dtype[np.float32]]
WeightMode = Literal["dense", "packed"]


class Linear:
    """y = x @ W.T for a GGUF weight W of shape (n_out, n_in)."""

    def __init__(self, info: TensorInfo, mode: WeightMode = "dense") -> None:
        self.info = info
        self.mode = mode
        self.n_out, self.n_in = info.shape[0], info.shape[-1]
        self.weight: F32 | None = None
        if mode == "dense":
            self.weight = dequantize(info.data, info.ggml_type, info.shape).reshape(self.n_out, self.n_in)

    def dense_weight(self) -> F32:
        if self.weight is not None:
            return self.weight
        return dequantize(self.info.data, self.info.ggml_type, self.info.shape).reshape(self.n_out, self.n_in)

    def __call__(self, x: F32) -> F32:
        w = self.dense_weight()
        return np.asarray(x @ w.T, dtype=np.float32)

    def rows(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> F32:
        """Rows of W (embedding lookup), dequantizing only those rows in packed mode."""
        if self.weight is not None:
            return self.weight[ids]
        row_bytes = self.info.n_bytes // self.n_out
        raw = self.info.data.reshape(self.n_out, row_bytes)[ids]
        return dequantize(raw.reshape(-1), self.info.ggml_type, (len(ids), self.n_in))
