"""Named access to a GGUF's tensors in compute layout, built by the model's kernel set.

`Weights.linear` makes the Linear class the numerics want (plain float32 for `fast`,
ggml-rounding GgmlLinear for `exact`), in the layout chosen at load (dense or packed), and
counts the bytes held for `pyllama bench` and the server's /props.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyllama.batch import Batch, OutputRows, SeqChunk
from pyllama.errors import ModelLoadError
from pyllama.exact_matmul import GgmlLinear
from pyllama.gguf_file import GGUFFile
from pyllama.kernels import Kernels, kernels_for
from pyllama.linear import Linear, WeightMode
from pyllama.quant import DEFAULT_PACKING, SUPPORTED_TYPES, PackLayout, dequantize
from pyllama.quant.grouped import _GroupedCodes as GroupedCodes
from pyllama.quant.pages import release_file_pages

F32 = np.ndarray[Any, np.dtype[np.float32]]

__all__ = ["Batch", "OutputRows", "SeqChunk", "Weights", "holds_copy"]


class Weights:
    """Named access to a GGUF's tensors in compute layout, with errors naming file and tensor."""

    def __init__(self, gguf: GGUFFile, mode: WeightMode, kernels: Kernels | None = None,
                 packing: PackLayout = DEFAULT_PACKING) -> None:
        self.gguf = gguf
        self.mode = mode
        self.packing = packing
        self.kernels = kernels if kernels is not None else kernels_for("fast")
        # Bytes held by the compute layouts built so far, and a load-progress hook
        # called as (bytes of file processed, total bytes).
        self.nbytes = 0
        self.progress: Callable[[int, int], None] | None = None
        self._done = 0
        self._total = sum(t.n_bytes for t in gguf.tensors.values())
        for info in gguf.tensors.values():
            if info.ggml_type not in SUPPORTED_TYPES:
                supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
                raise ModelLoadError(
                    f"{gguf.path}: tensor {info.name} has type {info.ggml_type.name}, which pyllama "
                    f"cannot read yet (supported: {supported})"
                )

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def linear(self, name: str, *, mode: WeightMode | None = None) -> Linear:
        if name not in self.gguf.tensors:
            raise ModelLoadError(f"{self.gguf.path}: required tensor {name} is missing")
        info = self.gguf.tensors[name]
        lin = self.kernels.linear_class(info, mode or self.mode, layout=self.packing, backend=self.kernels.backend)
        exact = lin.exact_nbytes if isinstance(lin, GgmlLinear) else 0  # the exact kernel's own codes
        self._account(info.n_bytes, lin.nbytes + exact)
        if holds_copy(lin):
            release_file_pages(info.data)
        return lin

    def _account(self, file_bytes: int, held: int) -> None:
        self.nbytes += held
        self._done += file_bytes
        if self.progress is not None:
            self.progress(self._done, self._total)

    def optional_linear(self, name: str) -> Linear | None:
        return self.linear(name) if self.has(name) else None

    def vector(self, name: str) -> F32:
        """A small tensor (norm weight, bias) as float32, always dense."""
        if name not in self.gguf.tensors:
            raise ModelLoadError(f"{self.gguf.path}: required tensor {name} is missing")
        info = self.gguf.tensors[name]
        out = dequantize(info.data, info.ggml_type, info.shape)
        self._account(info.n_bytes, out.nbytes)
        return out

    def optional_vector(self, name: str) -> F32 | None:
        return self.vector(name) if self.has(name) else None


def holds_copy(lin: Linear) -> bool:
    """Whether `lin` computes from its own arrays (dequantized or repacked), not the file's bytes."""
    if lin.packed is not None:
        return isinstance(lin.packed, GroupedCodes)
    return lin.weight is not None and not np.may_share_memory(lin.weight, lin.info.data)
