"""Packed layouts of the quantized types: small integer codes, float32 scales per group.

Every supported block type reduces to w = scale[group] * code + bias[group] (layout.py).
Two ways to hold the codes (which one: pyllama.quant.PackLayout):

- `ScaledCodes`: one int8 per weight. Fastest per call.
- `NibbleCodes`: two 4-bit codes per byte, for the 4-bit types (Q4_0, Q4_1, Q4_K): the
  same float32 codes reach the same matmul, but unpacking costs ~45% more per weight.

Scales are float32, or float16 where ggml makes them exact and non-negative (Q8_0's and
Q4_1's d in the lean "nibbles" layout: widened per tile with a bit trick at ~7x NumPy's
float16 cast), or any exact float16 in the compact layout (slow cast). Biases/mins stay
float32 except in compact.

Storage is tile-major, then group-major and transposed: rows are cut into tiles of
`rows_per_tile` (the last one zero-padded), and within tile t, codes[t, g, k, r] is
weight (t * rows_per_tile + r, g * group + k), scale[t, g, 0, r] its group's scale.
- Rows last: every NumPy inner loop of the matmul runs along the tile's rows (hundreds
  to thousands of elements) instead of along one 32-weight group. A one-token 576x1536
  matmul went from 0.45 to 0.17-0.27 ms natively and from 1.4-1.5 to 0.85-0.9 ms in
  Pyodide compared with a row-major layout.
- Tiles contiguous: a matmul dequantizes one cache-sized tile at a time, and reading it
  is one sequential sweep. With only the transposed layout, a tile of the 49152x576
  lm-head gathered 576 strided runs from 576 different pages and the copy dominated.

In a matmul the bias never touches the weights: x @ W.T = x @ (codes * scale).T plus
(x summed per group) @ bias, a product `group` times smaller than a pass over W.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyllama.quant.layout import F32, I8, Ids, PackedTensor
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, matmul, tile_rows

U8 = np.ndarray[Any, np.dtype[np.uint8]]
Cols = slice | np.ndarray[Any, np.dtype[np.integer[Any]]]

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


def tile_strategy(n_tokens: int, backend: MatmulBackend = DEFAULT_BACKEND) -> str:
    if backend == "blas":
        return "grouped-matmul" if n_tokens <= GROUPED_MATMUL_MAX_ROWS else "dequant"
    return "grouped-einsum" if n_tokens == 1 else "dequant"


def _transpose_into(dst: np.ndarray[Any, np.dtype[Any]], src: np.ndarray[Any, np.dtype[Any]]) -> None:
    """dst (G, k, n) = src (n, G, k) transposed, 256 rows at a time (NumPy's strided copy
    then stays in cache)."""
    for r0 in range(0, src.shape[0], 256):
        dst[:, :, r0 : r0 + 256] = src[r0 : r0 + 256].transpose(1, 2, 0)


def _narrowed(a: F32) -> np.ndarray[Any, np.dtype[np.floating[Any]]]:
    """`a` as float16 when that loses nothing, else `a` (for the compact layout).

    The legacy types' scales and mins are the file's own float16 values, so keeping them
    in float16 halves their memory (Q4_1 as nibbles: 0.75 -> 0.625 bytes per weight, the
    file's size); each tile widens them exactly to float32 before use. NumPy's float16 ->
    float32 cast runs at only ~0.5 G elements/s here, which made a one-token 3072x576
    nibble matmul 0.73 ms instead of 0.50 with float32 scales, so only the compact layout
    narrows. K-quant products such as d * sub-scale usually need float32 anyway.
    """
    narrow = a.astype(np.float16)
    if np.array_equal(narrow.astype(np.float32), a, equal_nan=True):
        return narrow
    return a


def _nonnegative_float16(a: F32) -> np.ndarray[Any, np.dtype[np.float16]] | None:
    """`a` as float16 if that is exact and every value is finite and >= +0, else None."""
    narrow = a.astype(np.float16)
    bits = narrow.view(np.uint16)
    if np.array_equal(narrow.astype(np.float32), a) and int(bits.max(initial=0)) < 0x7C00:
        return narrow
    return None


_TWO_112 = np.float32(2.0**112)


def _as_float32(a: np.ndarray[Any, np.dtype[np.floating[Any]]], buf: F32, nonnegative: bool = False) -> F32:
    """`a` itself if float32, else widened into `buf` (same shape, C-contiguous).

    `nonnegative`: `a` is float16 with its sign bit clear everywhere (finite, >= +0).
    Then its bits shifted left by 13 are the float32 bits of a * 2**-112, subnormals and
    zero included, and one exact multiply restores it: three passes at ~3.6 G values/s,
    instead of NumPy's float16 cast at ~0.5 G/s here (0.9 vs 6.4 ms for 3.3 M scales).
    """
    if a.dtype == np.float32:
        return a
    if nonnegative:
        as_int = buf.view(np.int32)
        np.copyto(as_int, a.view(np.uint16))
        np.left_shift(as_int, 13, out=as_int)
        np.multiply(buf, _TWO_112, out=buf)
        return buf
    np.copyto(buf, a)
    return buf


class _GroupedCodes(PackedTensor):
    """Shared arithmetic of the two code layouts; subclasses say how codes become floats."""

    unpacks = False  # True: _codes_into needs a uint8 half-tile after the float32 tile
    offset = 0  # subtracted from every code before scaling (NibbleCodes of Q4_0: 8)

    def __init__(self, shape: tuple[int, int], group: int, has_bias: bool, small_scales: bool = False) -> None:
        """Empty (zero) arrays for `shape`; fill() then writes them one tile at a time.

        `small_scales`: hold the scales in float16 as long as every tile's scales are
        exact, finite and non-negative there (ggml's Q8_0 and Q4_1 d always are), which
        widen fast (_as_float32); the first tile that is not turns them float32.
        """
        n_rows, n_cols = shape
        if n_cols % group:
            raise ValueError(f"{shape} does not split into groups of {group}")
        self.shape = shape
        self.group = group
        self.n_groups = n_cols // group
        # Balanced tiles: as many as the tile budget needs, with as little padding as possible.
        self.n_tiles = -(-n_rows // tile_rows(n_cols))
        self.rows_per_tile = -(-n_rows // self.n_tiles)
        tiled = (self.n_tiles, self.n_groups, 1, self.rows_per_tile)
        self.scale_nonnegative = small_scales
        self.scale: np.ndarray[Any, np.dtype[np.floating[Any]]] = np.zeros(
            tiled, dtype=np.float16 if small_scales else np.float32
        )
        self.bias: np.ndarray[Any, np.dtype[np.floating[Any]]] | None = (
            np.zeros(tiled, dtype=np.float32) if has_bias else None
        )

    def tile_bounds(self) -> Iterator[tuple[int, int, int]]:
        """(tile, first row, last row + 1) of every tile: the pieces fill() takes."""
        for t in range(self.n_tiles):
            r0 = t * self.rows_per_tile
            yield t, r0, min(self.shape[0], r0 + self.rows_per_tile)

    def fill(self, t: int, codes: I8, scale: F32, bias: F32 | None) -> None:
        """Store tile t from its rows' codes (n, G, group) and scale/bias (n, G) in weight order.

        Repacking a tensor tile by tile keeps the temporaries of the block decoding at one
        tile's size (~1 M weights): whole-tensor temporaries left ~30 MiB of freed heap
        resident in a packed SmolLM2 (glibc keeps mid-sized freed blocks).
        """
        n = codes.shape[0]
        if codes.shape[1:] != (self.n_groups, self.group) or scale.shape != (n, self.n_groups):
            raise ValueError(f"tile {t}: codes {codes.shape} / scale {scale.shape} do not fit {self.shape}")
        if self.scale_nonnegative and _nonnegative_float16(scale) is None:
            self.scale, self.scale_nonnegative = self.scale.astype(np.float32), False
        _transpose_into(self.scale[t, :, :, :n], scale[:, :, None])
        if self.bias is not None:
            if bias is None or bias.shape != scale.shape:
                raise ValueError(f"tile {t}: bias missing or of the wrong shape")
            _transpose_into(self.bias[t, :, :, :n], bias[:, :, None])
        self._fill_codes(t, codes)

    @abstractmethod
    def _fill_codes(self, t: int, codes: I8) -> None:
        """Store tile t's codes, (n, G, group) int8 in weight order."""

    def finish(self, narrow: bool = False) -> None:
        """After the last fill(): `narrow` keeps scales/biases float16 where that is exact
        (the compact layout; signed float16 scales widen slowly)."""
        if narrow:
            self.scale = _narrowed(self.scale)
            self.scale_nonnegative = False
            if self.bias is not None:
                self.bias = _narrowed(self.bias)

    @abstractmethod
    def _codes_into(self, w: F32, t: int, cols: Cols, tmp: U8 | None) -> None:
        """w (G, group, m) = codes of tile t's rows `cols` as float32 (exact small integers).

        `tmp` is uint8 scratch of shape (G, group // 2, m), or None to allocate.
        """

    def _matmul_bias(self) -> np.ndarray[Any, np.dtype[np.floating[Any]]] | None:
        """(T, G, rows): the per-group term added to scale * code in a matmul (None: zero)."""
        return None if self.bias is None else self.bias[:, :, 0, :]

    def _weights_t(self, w: F32, t: int, cols: Cols) -> None:
        """w (G, group, m) = the exact weights of tile t's rows `cols`, group-major."""
        self._codes_into(w, t, cols, None)
        np.multiply(w, self.scale[t][:, :, cols], out=w)
        if self.bias is not None:
            np.add(w, self.bias[t][:, :, cols], out=w)

    def _tiles(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(tile, first local row, last local row + 1) covering rows start..stop."""
        rows = self.rows_per_tile
        for t in range(start // rows, -(-stop // rows)):
            yield t, max(start, t * rows) - t * rows, min(stop, (t + 1) * rows) - t * rows

    def dequantize_into(self, out: F32, start: int = 0) -> None:
        m, n_cols = out.shape
        rows = self.rows_per_tile
        # Weights of up to ~256 KB at a time, transposed into their rows of `out`: writing
        # `out` through a transposed view instead was 20x slower.
        step = max(8, (1 << 16) // n_cols)
        buf = np.empty(min(m, rows, step) * n_cols, dtype=np.float32)
        done = 0
        for t, lo, hi in self._tiles(start, start + m):
            for a in range(lo, hi, step):
                b = min(hi, a + step)
                w = buf[: (b - a) * n_cols].reshape(self.n_groups, self.group, b - a)
                self._weights_t(w, t, slice(a, b))
                out[done : done + b - a] = w.reshape(n_cols, b - a).T
                done += b - a

    @abstractmethod
    def _row_codes(self, tile_of: Ids, local: Ids) -> F32:
        """(n, G, group) float32 codes of the rows at (tile, local row) pairs."""

    def dequantize_rows(self, ids: Ids) -> F32:
        # One advanced-indexing gather across tiles: rows come out in weight order.
        tile_of, local = np.divmod(np.asarray(ids), self.rows_per_tile)
        w = self._row_codes(tile_of, local)
        if self.offset:
            np.subtract(w, np.float32(self.offset), out=w)  # exact: small integers
        np.multiply(w, self.scale[tile_of, :, :, local], out=w)
        if self.bias is not None:
            np.add(w, self.bias[tile_of, :, :, local], out=w)
        return w.reshape(len(w), self.shape[1])

    def dequantize_t_into(self, wt: F32) -> None:
        for t, lo, hi in self._tiles(0, self.shape[0]):
            r0 = t * self.rows_per_tile
            w = np.empty((self.n_groups, self.group, hi - lo), dtype=np.float32)
            self._weights_t(w, t, slice(lo, hi))
            wt[:, r0 + lo : r0 + hi] = w.reshape(self.shape[1], hi - lo)

    def scratch_size(self) -> int:
        # float32 elements: the weight tile, one (groups, rows) tile of scales or biases
        # widened to float32, and a uint8 half-tile for layouts that unpack.
        tile = self.rows_per_tile * self.shape[1]
        return tile + self.n_groups * self.rows_per_tile + (tile // 8 + 1 if self.unpacks else 0)

    def matmul_t_into(self, x: F32, y: F32, scratch: F32, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        n_rows, n_cols = self.shape
        n_groups, group, rows = self.n_groups, self.group, self.rows_per_tile
        xg = x.reshape(x.shape[0], n_groups, group)
        strategy = tile_strategy(x.shape[0], backend)
        x_by_group = np.ascontiguousarray(xg.transpose(1, 0, 2))  # (groups, L, group)
        bias = self._matmul_bias()
        x_sums = None if bias is None else np.ascontiguousarray(xg.sum(axis=2))  # (L, groups)
        tile = rows * n_cols
        w = scratch[:tile].reshape(n_groups, group, rows)
        # Scales/biases may be float16 (exact): widen one tile's worth before use, since
        # a float16 operand inside a broadcasting multiply was 10x slower.
        factors = scratch[tile : tile + n_groups * rows].reshape(n_groups, rows)
        tmp = None
        if self.unpacks:
            tmp = scratch[tile + n_groups * rows :].view(np.uint8)[: tile // 2].reshape(n_groups, group // 2, rows)
        whole = slice(None)
        for t in range(self.scale.shape[0]):
            r0, r1 = t * rows, min(n_rows, (t + 1) * rows)
            n = r1 - r0
            self._codes_into(w, t, whole, tmp)
            scale = _as_float32(self.scale[t, :, 0, :], factors, self.scale_nonnegative)
            if strategy == "dequant":
                np.multiply(w, scale[:, None, :], out=w)
                matmul(x, w.reshape(n_cols, rows)[:, :n], out=y[:, r0:r1], backend=backend)
            else:
                if strategy == "grouped-matmul":
                    partial = np.matmul(x_by_group, w)  # (groups, L, rows)
                else:
                    partial = np.einsum("gkr,glk->glr", w, x_by_group)
                np.einsum("glr,gr->lr", partial[:, :, :n], scale[:, :n], out=y[:, r0:r1])
            if bias is not None and x_sums is not None:
                y[:, r0:r1] += matmul(x_sums, _as_float32(bias[t], factors)[:, :n], backend=backend)


class ScaledCodes(_GroupedCodes):
    """int8 codes with a float32 scale (and optional bias) per group of `group` weights."""

    def __init__(self, shape: tuple[int, int], group: int, has_bias: bool, small_scales: bool = False) -> None:
        super().__init__(shape, group, has_bias, small_scales)
        self.codes = np.zeros((self.n_tiles, self.n_groups, group, self.rows_per_tile), dtype=np.int8)

    def _fill_codes(self, t: int, codes: I8) -> None:
        _transpose_into(self.codes[t, :, :, : codes.shape[0]], codes)

    def _codes_into(self, w: F32, t: int, cols: Cols, tmp: U8 | None) -> None:
        np.copyto(w, self.codes[t][:, :, cols])

    def _row_codes(self, tile_of: Ids, local: Ids) -> F32:
        return self.codes[tile_of, :, :, local].astype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + (0 if self.bias is None else self.bias.nbytes)


class NibbleCodes(_GroupedCodes):
    """4-bit codes, two per byte: byte (t, g, j, r) holds codes k = j (low) and j + group/2.

    `offset` is subtracted from the unsigned nibble (8 for Q4_0, whose codes are q - 8).
    Exact dequantization computes float(q - offset) * scale like ggml; the matmul folds
    -offset * scale into the per-group bias instead (within float32 rounding).
    """

    unpacks = True

    def __init__(
        self, shape: tuple[int, int], group: int, has_bias: bool, offset: int, small_scales: bool = False
    ) -> None:
        super().__init__(shape, group, has_bias, small_scales)
        self.offset = offset
        half = group // 2
        # Padding rows hold 0, not the offset: their outputs are never read.
        self.nibbles = np.zeros((self.n_tiles, self.n_groups, half, self.rows_per_tile), dtype=np.uint8)
        self.folded_bias: np.ndarray[Any, np.dtype[np.floating[Any]]] | None = None

    def _fill_codes(self, t: int, codes: I8) -> None:
        half = self.group // 2
        unsigned = codes.view(np.uint8)
        if self.offset:
            unsigned = unsigned + np.uint8(self.offset)  # a copy: `codes` may be the caller's
        packed = np.left_shift(unsigned[:, :, half:], 4)
        np.bitwise_or(packed, unsigned[:, :, :half], out=packed)
        _transpose_into(self.nibbles[t, :, :, : codes.shape[0]], packed)

    def finish(self, narrow: bool = False) -> None:
        """The matmul adds -offset * scale (+ bias) per group instead of offsetting each code."""
        super().finish(narrow)
        self.folded_bias = None if self.bias is None else self.bias[:, :, 0, :]
        if self.offset:
            fold: F32 = np.float32(-self.offset) * self.scale[:, :, 0, :].astype(np.float32)
            if self.folded_bias is not None:
                np.add(fold, self.folded_bias, out=fold)
            self.folded_bias = fold

    def _codes_into(self, w: F32, t: int, cols: Cols, tmp: U8 | None) -> None:
        half = self.group // 2
        nib = self.nibbles[t][:, :, cols]
        if tmp is None:
            tmp = np.empty(nib.shape, dtype=np.uint8)
        np.bitwise_and(nib, 0x0F, out=tmp)
        np.copyto(w[:, :half], tmp)
        np.right_shift(nib, 4, out=tmp)
        np.copyto(w[:, half:], tmp)

    def _row_codes(self, tile_of: Ids, local: Ids) -> F32:
        nib = self.nibbles[tile_of, :, :, local]  # (n, G, group // 2)
        w = np.empty((*nib.shape[:2], self.group), dtype=np.float32)
        half = self.group // 2
        np.copyto(w[:, :, :half], nib & 0x0F)
        np.copyto(w[:, :, half:], nib >> 4)
        return w

    def _weights_t(self, w: F32, t: int, cols: Cols) -> None:
        self._codes_into(w, t, cols, None)
        if self.offset:
            np.subtract(w, np.float32(self.offset), out=w)  # exact: small integers
        np.multiply(w, self.scale[t][:, :, cols], out=w)
        if self.bias is not None:
            np.add(w, self.bias[t][:, :, cols], out=w)

    def _matmul_bias(self) -> np.ndarray[Any, np.dtype[np.floating[Any]]] | None:
        return self.folded_bias

    @property
    def nbytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.nbytes
        folded = 0 if self.folded_bias is None or self.offset == 0 else self.folded_bias.nbytes
        return self.nibbles.nbytes + self.scale.nbytes + bias + folded
