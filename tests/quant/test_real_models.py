"""The dequantizers on real weights: every tensor type present in the two reference models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import quants as gguf_quants

from pyllama.gguf_file import TensorInfo, read_gguf
from pyllama.linear import Linear
from pyllama.quant import dequantize


def smallest_tensor_per_type(path: Path) -> list[TensorInfo]:
    by_type: dict[str, TensorInfo] = {}
    for info in read_gguf(path).tensors.values():
        best = by_type.get(info.ggml_type.name)
        if best is None or info.n_bytes < best.n_bytes:
            by_type[info.ggml_type.name] = info
    return sorted(by_type.values(), key=lambda t: t.ggml_type.name)


def check_file(path: Path, expected_types: set[str]) -> None:
    infos = smallest_tensor_per_type(path)
    assert {t.ggml_type.name for t in infos} == expected_types
    for info in infos:
        got = dequantize(info.data, info.ggml_type, info.shape)
        rows = info.data.reshape(info.shape[0] if len(info.shape) > 1 else 1, -1)
        want = np.asarray(gguf_quants.dequantize(rows, info.ggml_type), dtype=np.float32).reshape(info.shape)
        assert np.array_equal(got, want), info.name
        if len(info.shape) == 2:
            dense, packed = Linear(info, "dense"), Linear(info, "packed")
            x = np.random.default_rng(0).standard_normal((2, info.shape[1])).astype(np.float32)
            y = dense(x)
            np.testing.assert_allclose(packed(x), y, rtol=1e-5, atol=1e-5 * float(np.abs(y).max()))


def test_smollm2_tensors(smollm2_path: Path) -> None:
    check_file(smollm2_path, {"F32", "Q4_1", "Q8_0"})


def test_gemma3_tensors(gemma_path: Path) -> None:
    check_file(gemma_path, {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"})
