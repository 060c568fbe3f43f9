"""Compute layouts of weight tensors: what a quantized matrix becomes after repacking.

Every ggml block type we support reduces to the same shape of arithmetic:

    w = scale[group] * code + bias[group]        (bias optional)

where `code` is a small integer per weight (already offset, e.g. q - 8 for Q4_0, or
the IQ4 non-linear table value) and `scale`/`bias` are float32 per group of 16 or 32
weights. Repacking splits the bit-packed blocks into those arrays ONCE at load, so
a matmul afterwards only casts codes to float32 and multiplies, in cache-sized tiles,
into a reused scratch buffer.

The layouts of quantized types (int8 codes, or nibbles for 4-bit types) live in
grouped.py; this module holds the common interface, the float layouts and row stacking.

Bit-exactness with `gguf.quants` (and ggml): each formula keeps ggml's rounding order.
`scale` is the product ggml computes per group (d * sub-scale) and `bias` is the term
ggml adds (or the negation of the term it subtracts: x - y == x + (-y) exactly in IEEE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, matmul_t, tile_rows

F32 = np.ndarray[Any, np.dtype[np.float32]]
I8 = np.ndarray[Any, np.dtype[np.int8]]
Ids = np.ndarray[Any, np.dtype[np.integer[Any]]]


class BlockArrays(NamedTuple):
    """What a family module makes of raw blocks: per-weight codes, per-group scale/bias."""

    codes: I8  # (n_blocks, block_size)
    scale: F32  # (n_blocks, block_size // group)
    bias: F32 | None  # same shape as scale, or None when the type has no offset term
    group: int


class PackedTensor(ABC):
    """A 2-D (n_rows, n_cols) weight in a layout that dequantizes fast into float32."""

    shape: tuple[int, int]

    @abstractmethod
    def dequantize_into(self, out: F32, start: int = 0) -> None:
        """Write rows start .. start + len(out) into `out`, a C-contiguous float32 array."""

    @abstractmethod
    def dequantize_rows(self, ids: Ids) -> F32:
        """Only the rows `ids` as a new float32 array (embedding lookups)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Memory held by the arrays of this layout (views of a file count too)."""

    def dequantize_t_into(self, wt: F32) -> None:
        """Write W transposed, (n_cols, n_rows), into `wt` (layouts stored transposed: fast)."""
        w = np.empty(self.shape, dtype=np.float32)
        self.dequantize_into(w)
        wt[...] = w.T

    def scratch_size(self) -> int:
        """float32 elements of scratch that matmul_t_into needs (one tile)."""
        return min(self.shape[0], tile_rows(self.shape[1])) * self.shape[1]

    def matmul_t_into(self, x: F32, y: F32, scratch: F32, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        """y (L, n_rows) = x (L, n_cols) @ W.T, dequantizing W one cache-sized tile at a time.

        `scratch` is a flat float32 buffer of at least scratch_size() elements.
        """
        n_rows, n_cols = self.shape
        step = tile_rows(n_cols)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            w = scratch[: (r1 - r0) * n_cols].reshape(r1 - r0, n_cols)
            self.dequantize_into(w, r0)
            matmul_t(x, w, out=y[:, r0:r1], backend=backend)


class FloatValues(PackedTensor):
    """F32 or F16 weights kept as they are in the file; dequantizing is a (casting) copy."""

    def __init__(self, values: np.ndarray[Any, np.dtype[np.floating[Any]]]) -> None:
        self.shape = (values.shape[0], values.shape[1])
        self.values = values

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        np.copyto(out, self.values[start : start + out.shape[0]], casting="same_kind")

    def dequantize_rows(self, ids: Ids) -> F32:
        return np.asarray(self.values[ids], dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


class BFloat16Bits(PackedTensor):
    """BF16 weights as int16 bit patterns: float32 bits are the same 16 bits shifted up.

    NumPy has no bfloat16 dtype, so the conversion is integer work on a float32 buffer
    viewed as int32 (sign-extend, then shift the low garbage out).
    """

    def __init__(self, bits: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        self.shape = (bits.shape[0], bits.shape[1])
        self.bits = bits

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        as_int = out.view(np.int32)
        np.copyto(as_int, self.bits[start : start + out.shape[0]], casting="safe")
        np.left_shift(as_int, 16, out=as_int)

    def dequantize_rows(self, ids: Ids) -> F32:
        out = np.empty((len(ids), self.shape[1]), dtype=np.float32)
        as_int = out.view(np.int32)
        np.copyto(as_int, self.bits[ids], casting="safe")
        np.left_shift(as_int, 16, out=as_int)
        return out

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)


class RowRange(PackedTensor):
    """Rows start..stop of another packed tensor, holding no memory of its own.

    A fused weight (Q/K/V or gate/up repacked as one tensor, pyllama/kernels/fast.py)
    leaves each part this view, so the part still works on its own (embedding lookups of
    a tied head) without a second copy of its codes.
    """

    def __init__(self, base: PackedTensor, start: int, stop: int) -> None:
        if not 0 <= start < stop <= base.shape[0]:
            raise ValueError(f"row range {start}..{stop} outside {base.shape}")
        self.base, self.start = base, start
        self.shape = (stop - start, base.shape[1])

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        self.base.dequantize_into(out, self.start + start)

    def dequantize_rows(self, ids: Ids) -> F32:
        return self.base.dequantize_rows(np.asarray(ids) + self.start)

    @property
    def nbytes(self) -> int:
        return 0
