"""Packed layouts of the quantized types: small integer codes, float32 scales per group.

Every supported block type reduces to w = scale[group] * code + bias[group] (layout.py).
Two ways to hold the codes:

- `ScaledCodes`: one int8 per weight. Fastest per call.
- `NibbleCodes`: two 4-bit codes per byte, for the 4-bit types (Q4_0, Q4_1, Q4_K):
  0.75 instead of 1.25 bytes per weight in all, for about 1.5x the per-call unpacking
  time (576x1536 one-token matmul, native 0.20 -> 0.30 ms, Pyodide 0.82 -> 1.3 ms).

Both are stored group-major and transposed: codes[g, k, r] is weight (r, g * group + k)
and scale[g, 0, r] its group's scale. With rows last, every NumPy inner loop of the
matmul runs along n_rows (hundreds to thousands of elements) instead of along one
32-weight group: a one-token 576x1536 matmul went from 0.45 to 0.17-0.27 ms natively
and from 1.4-1.5 to 0.85-0.9 ms in Pyodide compared with a row-major layout.

In a matmul the bias never touches the weights: x @ W.T = x @ (codes * scale).T plus
(x summed per group) @ bias, a product `group` times smaller than a pass over W.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from pyllama.quant.layout import F32, I8, Ids, PackedTensor
from pyllama.quant.matmul import matmul, matmul_backend, tile_rows

U8 = np.ndarray[Any, np.dtype[np.uint8]]

# How a packed matmul with L input rows treats a tile of codes. Chosen from a sweep of
# all three on 576x1536 and 1536x576 Q4_1 tiles, natively and in Pyodide/Node:
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


def _transpose(a: np.ndarray[Any, np.dtype[Any]]) -> np.ndarray[Any, np.dtype[Any]]:
    """A contiguous copy of a 2-D array's transpose, copied in blocks of rows.

    Blocked, NumPy's strided copy stays in cache: 4x faster for a 49152x576 int8 matrix.
    """
    n_rows = a.shape[0]
    out = np.empty((a.shape[1], n_rows), dtype=a.dtype)
    for r0 in range(0, n_rows, 256):
        out[:, r0 : r0 + 256] = a[r0 : r0 + 256].T
    return out


def _group_major(a: np.ndarray[Any, np.dtype[Any]], n_groups: int) -> np.ndarray[Any, np.dtype[Any]]:
    """(n_rows, n_groups * k) -> contiguous (n_groups, k, n_rows)."""
    return _transpose(a).reshape(n_groups, -1, a.shape[0])


class _GroupedCodes(PackedTensor):
    """Shared arithmetic of the two code layouts; subclasses say how codes become floats."""

    unpacks = False  # True: _codes_into needs the uint8 half-tile after the float32 tile

    def __init__(self, shape: tuple[int, int], group: int, scale: F32, bias: F32 | None) -> None:
        n_rows, n_cols = shape
        if n_cols % group or scale.shape != (n_rows, n_cols // group):
            raise ValueError(f"scale shape {scale.shape} does not match {shape} / {group}")
        if bias is not None and bias.shape != scale.shape:
            raise ValueError(f"bias shape {bias.shape} != scale shape {scale.shape}")
        self.shape = shape
        self.group = group
        self.n_groups = n_cols // group
        self.scale = _group_major(scale.astype(np.float32, copy=False), self.n_groups)  # (G, 1, R)
        self.bias = None if bias is None else _group_major(bias.astype(np.float32, copy=False), self.n_groups)

    @abstractmethod
    def _codes_into(self, w: F32, cols: slice | Ids, tmp: U8 | None) -> None:
        """w (G, group, m) = the codes of rows `cols` as float32 (exact small integers).

        `tmp` is uint8 scratch of shape (G, group // 2, m), or None to allocate.
        """

    def _matmul_bias(self) -> F32 | None:
        """(G, n_rows): the per-group term added to scale * code in a matmul (None: zero)."""
        return None if self.bias is None else self.bias[:, 0, :]

    def _weights_t(self, w: F32, cols: slice | Ids) -> None:
        """w (G, group, m) = the exact weights of rows `cols`, group-major (W.T reshaped)."""
        self._codes_into(w, cols, None)
        np.multiply(w, self.scale[:, :, cols], out=w)
        if self.bias is not None:
            np.add(w, self.bias[:, :, cols], out=w)

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        # Group-major tiles of ~256 KB, each transposed into its rows of `out`: writing
        # `out` through a transposed view instead was 20x slower.
        m, n_cols = out.shape
        step = max(8, (1 << 16) // n_cols)
        buf = np.empty(min(m, step) * n_cols, dtype=np.float32)
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            tile = buf[: (r1 - r0) * n_cols].reshape(self.n_groups, self.group, r1 - r0)
            self._weights_t(tile, slice(start + r0, start + r1))
            out[r0:r1] = tile.reshape(n_cols, r1 - r0).T

    def dequantize_rows(self, ids: Ids) -> F32:
        ids = np.asarray(ids)
        tile = np.empty((self.n_groups, self.group, len(ids)), dtype=np.float32)
        self._weights_t(tile, ids)
        return np.ascontiguousarray(tile.reshape(self.shape[1], len(ids)).T)

    def dequantize_t_into(self, wt: F32) -> None:
        self._weights_t(wt.reshape(self.n_groups, self.group, self.shape[0]), slice(None))

    def matmul_t_into(self, x: F32, y: F32, scratch: F32) -> None:
        n_rows, n_cols = self.shape
        n_groups, group = self.n_groups, self.group
        xg = x.reshape(x.shape[0], n_groups, group)
        strategy = tile_strategy(x.shape[0])
        x_by_group = np.ascontiguousarray(xg.transpose(1, 0, 2))  # (groups, L, group)
        step = tile_rows(n_cols)
        tile = min(n_rows, step) * n_cols
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            w = scratch[: (r1 - r0) * n_cols].reshape(n_groups, group, r1 - r0)
            tmp = None
            if self.unpacks:
                tmp = scratch[tile:].view(np.uint8)[: (r1 - r0) * n_cols // 2].reshape(n_groups, group // 2, -1)
            self._codes_into(w, slice(r0, r1), tmp)
            if strategy == "dequant":
                np.multiply(w, self.scale[:, :, r0:r1], out=w)
                matmul(x, w.reshape(n_cols, r1 - r0), out=y[:, r0:r1])
                continue
            if strategy == "grouped-matmul":
                partial = np.matmul(x_by_group, w)  # (groups, L, rows)
            else:
                partial = np.einsum("gkr,glk->glr", w, x_by_group)
            np.einsum("glr,gr->lr", partial, self.scale[:, 0, r0:r1], out=y[:, r0:r1])
        bias = self._matmul_bias()
        if bias is not None:
            y += matmul(np.ascontiguousarray(xg.sum(axis=2)), bias)


class ScaledCodes(_GroupedCodes):
    """int8 codes with a float32 scale (and optional bias) per group of `group` weights."""

    def __init__(self, codes: I8, scale: F32, bias: F32 | None, group: int) -> None:
        """codes (n_rows, n_cols) in weight order; scale and bias (n_rows, n_cols // group)."""
        super().__init__((codes.shape[0], codes.shape[1]), group, scale, bias)
        self.codes = _group_major(codes, self.n_groups)  # (G, group, R)

    def _codes_into(self, w: F32, cols: slice | Ids, tmp: U8 | None) -> None:
        np.copyto(w, self.codes[:, :, cols])

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + (0 if self.bias is None else self.bias.nbytes)


class NibbleCodes(_GroupedCodes):
    """4-bit codes, two per byte: byte (g, j, r) holds codes k = j (low) and j + group/2.

    `offset` is subtracted from the unsigned nibble (8 for Q4_0, whose codes are q - 8).
    Exact dequantization computes float(q - offset) * scale like ggml; the matmul folds
    -offset * scale into the per-group bias instead (within float32 rounding).
    """

    unpacks = True

    def __init__(self, codes: I8, scale: F32, bias: F32 | None, group: int, offset: int) -> None:
        super().__init__((codes.shape[0], codes.shape[1]), group, scale, bias)
        unsigned = _group_major(codes, self.n_groups).view(np.uint8)  # (G, group, R)
        if offset:
            unsigned += np.uint8(offset)
        half = group // 2
        self.nibbles = unsigned[:, :half] | (unsigned[:, half:] << 4)
        self.offset = offset
        self.folded_bias: F32 | None = None if self.bias is None else self.bias[:, 0, :]
        if offset:
            fold: F32 = np.float32(-offset) * self.scale[:, 0, :]
            if self.folded_bias is not None:
                np.add(fold, self.folded_bias, out=fold)
            self.folded_bias = fold

    def scratch_size(self) -> int:
        # The float32 tile plus a uint8 half-tile for unpacking (in float32 units).
        tile = super().scratch_size()
        return tile + tile // 8 + 1

    def _codes_into(self, w: F32, cols: slice | Ids, tmp: U8 | None) -> None:
        half = self.group // 2
        nib = self.nibbles[:, :, cols]
        if tmp is None:
            tmp = np.empty(nib.shape, dtype=np.uint8)
        np.bitwise_and(nib, 0x0F, out=tmp)
        np.copyto(w[:, :half], tmp)
        np.right_shift(nib, 4, out=tmp)
        np.copyto(w[:, half:], tmp)

    def _weights_t(self, w: F32, cols: slice | Ids) -> None:
        self._codes_into(w, cols, None)
        if self.offset:
            np.subtract(w, np.float32(self.offset), out=w)  # exact: small integers
        np.multiply(w, self.scale[:, :, cols], out=w)
        if self.bias is not None:
            np.add(w, self.bias[:, :, cols], out=w)

    def _matmul_bias(self) -> F32 | None:
        return self.folded_bias

    @property
    def nbytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.nbytes
        folded = 0 if self.folded_bias is None or self.offset == 0 else self.folded_bias.nbytes
        return self.nibbles.nbytes + self.scale.nbytes + bias + folded
