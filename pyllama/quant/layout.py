"""Compute layouts of weight tensors: what a quantized matrix becomes after repacking.

Every ggml block type we support reduces to the same shape of arithmetic:

    w = scale[group] * code + bias[group]        (bias optional)

where `code` is a small integer per weight (already offset, e.g. q - 8 for Q4_0, or
the IQ4 non-linear table value) and `scale`/`bias` are float32 per group of 16 or 32
weights. Repacking splits the bit-packed blocks into those arrays ONCE at load, so
dequantizing a whole matrix afterwards is two or three NumPy ufunc calls with `out=`
and no temporaries (int8 -> float32 casting happens inside the multiply).

Codes are kept as one int8 per weight, not as nibbles: measured natively, int8 codes
dequantize ~40% faster than unpacking nibbles on every call, at the price of 1 byte per
weight instead of 0.5 (still 4x smaller than float32).

Bit-exactness with `gguf.quants` (and ggml): each formula keeps ggml's rounding order.
`scale` is the product ggml computes per group (d * sub-scale) and `bias` is the term
ggml adds (or the negation of the term it subtracts: x - y == x + (-y) exactly in IEEE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from pyllama.quant.matmul import matmul, matmul_backend, matmul_t, tile_rows

F32 = np.ndarray[Any, np.dtype[np.float32]]
I8 = np.ndarray[Any, np.dtype[np.int8]]
Ids = np.ndarray[Any, np.dtype[np.integer[Any]]]


class BlockArrays(NamedTuple):
    """What a family module makes of raw blocks: per-weight codes, per-group scale/bias."""

    codes: I8  # (n_blocks, block_size)
    scale: F32  # (n_blocks, block_size // group)
    bias: F32 | None  # same shape as scale, or None when the type has no offset term
    group: int


# How a packed matmul with L input rows treats a tile of int8 codes. Chosen from a sweep
# of all three on 576x1536 and 1536x576 Q4_1 tiles, natively and in Pyodide/Node:
# - "grouped-matmul": skip the per-weight scale multiply. Multiply each group's codes
#   (cast to float32) by that group's slice of x in one batched BLAS matmul, then apply
#   the scales to the partial sums, `group` times fewer than the weights. Natively the
#   fastest up to L = 16 (L=1: 0.27 ms vs 0.50 dequantizing); without BLAS it is erratic.
# - "grouped-einsum": the same contraction as one einsum. The best without BLAS for
#   L = 1 (Pyodide: 0.85-0.9 ms vs 1.4-1.5 dequantizing); beyond that, einsum loses.
# - "dequant": scale the codes into the float32 tile, then one plain matmul.
GROUPED_MATMUL_MAX_ROWS = 16


def tile_strategy(n_tokens: int) -> str:
    if matmul_backend() == "blas":
        return "grouped-matmul" if n_tokens <= GROUPED_MATMUL_MAX_ROWS else "dequant"
    return "grouped-einsum" if n_tokens == 1 else "dequant"


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

    def matmul_t_into(self, x: F32, y: F32, scratch: F32) -> None:
        """y (L, n_rows) = x (L, n_cols) @ W.T, dequantizing W one cache-sized tile at a time.

        `scratch` is a flat float32 buffer of at least tile_rows(n_cols) * n_cols elements.
        """
        n_rows, n_cols = self.shape
        step = tile_rows(n_cols)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            w = scratch[: (r1 - r0) * n_cols].reshape(r1 - r0, n_cols)
            self.dequantize_into(w, r0)
            matmul_t(x, w, out=y[:, r0:r1])


class ScaledCodes(PackedTensor):
    """int8 codes with a float32 scale (and optional bias) per group of `group` weights.

    Stored group-major and transposed: codes[g, k, r] is weight (r, g * group + k) and
    scale[g, 0, r] its group's scale. With rows last, every NumPy inner loop of the
    matmul runs along n_rows (hundreds to thousands of elements) instead of along one
    32-weight group: a one-token 576x1536 matmul went from 0.45 to 0.17-0.27 ms natively
    and from 1.4-1.5 to 0.85-0.9 ms in Pyodide, and long prompts got no slower.
    """

    def __init__(self, codes: I8, scale: F32, bias: F32 | None, group: int) -> None:
        """codes (n_rows, n_cols) in weight order; scale and bias (n_rows, n_cols // group)."""
        n_rows, n_cols = codes.shape
        if n_cols % group or scale.shape != (n_rows, n_cols // group):
            raise ValueError(f"scale shape {scale.shape} does not match codes {codes.shape} / {group}")
        if bias is not None and bias.shape != scale.shape:
            raise ValueError(f"bias shape {bias.shape} != scale shape {scale.shape}")
        self.shape = (n_rows, n_cols)
        self.group = group
        n_groups = n_cols // group
        self.codes = _transpose(codes).reshape(n_groups, group, n_rows)
        self.scale = _transpose(scale.astype(np.float32, copy=False)).reshape(n_groups, 1, n_rows)
        self.bias = (
            None if bias is None else _transpose(bias.astype(np.float32, copy=False)).reshape(n_groups, 1, n_rows)
        )

    def _write(self, out: F32, cols: slice | Ids) -> None:
        """out (m, n_cols) = the weights of rows `cols` (a slice or ids of the last axis)."""
        o = out.reshape(out.shape[0], *self.codes.shape[:2]).transpose(1, 2, 0)
        np.multiply(self.codes[:, :, cols], self.scale[:, :, cols], out=o)
        if self.bias is not None:
            np.add(o, self.bias[:, :, cols], out=o)

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        self._write(out, slice(start, start + out.shape[0]))

    def dequantize_rows(self, ids: Ids) -> F32:
        out = np.empty((len(ids), self.shape[1]), dtype=np.float32)
        self._write(out, np.asarray(ids))
        return out

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + (0 if self.bias is None else self.bias.nbytes)

    def matmul_t_into(self, x: F32, y: F32, scratch: F32) -> None:
        """Tiled like the generic matmul, but the bias never touches the weights.

        W = codes * scale + bias per group, so x @ W.T = x @ (codes * scale).T plus
        (x summed per group) @ bias: a matmul 1/group the size replaces a pass over W.
        """
        n_rows, n_cols = self.shape
        n_groups, group = self.codes.shape[:2]
        xg = x.reshape(x.shape[0], n_groups, group)
        strategy = tile_strategy(x.shape[0])
        x_by_group = np.ascontiguousarray(xg.transpose(1, 0, 2))  # (groups, L, group)
        step = tile_rows(n_cols)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            w = scratch[: (r1 - r0) * n_cols].reshape(n_groups, group, r1 - r0)
            np.copyto(w, self.codes[:, :, r0:r1])
            if strategy == "dequant":
                np.multiply(w, self.scale[:, :, r0:r1], out=w)
                matmul(x, w.reshape(n_cols, r1 - r0), out=y[:, r0:r1])
                continue
            if strategy == "grouped-matmul":
                partial = np.matmul(x_by_group, w)  # (groups, L, rows)
            else:
                partial = np.einsum("gkr,glk->glr", w, x_by_group)
            np.einsum("glr,gr->lr", partial, self.scale[:, 0, r0:r1], out=y[:, r0:r1])
        if self.bias is not None:
            y += matmul(np.ascontiguousarray(xg.sum(axis=2)), self.bias[:, 0, :])


def _transpose(a: np.ndarray[Any, np.dtype[Any]]) -> np.ndarray[Any, np.dtype[Any]]:
    """A contiguous copy of a 2-D array's transpose, copied in blocks of rows.

    Blocked, NumPy's strided copy stays in cache: 4x faster for a 49152x576 int8 matrix.
    """
    n_rows = a.shape[0]
    out = np.empty((a.shape[1], n_rows), dtype=a.dtype)
    for r0 in range(0, n_rows, 256):
        out[:, r0 : r0 + 256] = a[r0 : r0 + 256].T
    return out


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


class StackedRows(PackedTensor):
    """Several matrices with the same n_cols stacked along rows (fused QKV, gate+up).

    The parts may have different types (Q4_K_M mixes Q4_K and Q6_K), so each part
    dequantizes (or multiplies) into its own row range of the output.
    """

    def __init__(self, parts: list[PackedTensor]) -> None:
        if not parts:
            raise ValueError("StackedRows needs at least one part")
        n_cols = parts[0].shape[1]
        if any(p.shape[1] != n_cols for p in parts):
            raise ValueError(f"cannot stack rows of different widths: {[p.shape for p in parts]}")
        self.parts = parts
        self.starts = [0]
        for p in parts:
            self.starts.append(self.starts[-1] + p.shape[0])
        self.shape = (self.starts[-1], n_cols)

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        stop = start + out.shape[0]
        for part, p0 in zip(self.parts, self.starts, strict=False):
            lo, hi = max(start, p0), min(stop, p0 + part.shape[0])
            if lo < hi:
                part.dequantize_into(out[lo - start : hi - start], lo - p0)

    def dequantize_rows(self, ids: Ids) -> F32:
        ids = np.asarray(ids)
        out = np.empty((len(ids), self.shape[1]), dtype=np.float32)
        which = np.searchsorted(np.array(self.starts), ids, side="right") - 1
        for i, part in enumerate(self.parts):
            sel = np.flatnonzero(which == i)
            if len(sel):
                out[sel] = part.dequantize_rows(ids[sel] - self.starts[i])
        return out

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def matmul_t_into(self, x: F32, y: F32, scratch: F32) -> None:
        for part, p0 in zip(self.parts, self.starts, strict=False):
            part.matmul_t_into(x, y[:, p0 : p0 + part.shape[0]], scratch)
