"""K-quants: 256-weight super-blocks with 6- or 8-bit sub-block scales.

    Q2_K  16 groups of 16, 4-bit scale and min     w = (d*sc) * q - (dmin*m)
    Q3_K  16 groups of 16, 6-bit signed scale      w = (d*sc) * (q - 4*!hbit)
    Q4_K   8 groups of 32, 6-bit scale and min     w = (d*sc) * q - (dmin*m)
    Q5_K   8 groups of 32, like Q4_K with a 5th bit
    Q6_K  16 groups of 16, int8 scale              w = (d*sc) * (q - 32)

The bit layouts follow ggml-quants.c (dequantize_row_q*_K); the reshapes mirror
gguf-py's reference so each weight lands where ggml puts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.quant.bits import bit_planes, f16_field
from pyllama.quant.layout import F32, BlockArrays

U8 = np.ndarray[Any, np.dtype[np.uint8]]
QK_K = 256
CRUMBS = (0, 2, 4, 6)  # four 2-bit fields per byte
BITS = tuple(range(8))


def _scale_min_k4(scales: U8) -> tuple[U8, U8]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins (get_scale_min_k4)."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _neg_product(a: F32, b: np.ndarray[Any, np.dtype[np.integer[Any]]]) -> F32:
    """-(a * b) in float32: the term ggml subtracts, stored so that the hot path only adds."""
    out: F32 = a * b.astype(np.float32)
    np.negative(out, out=out)
    return out


def q2_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 80), f16_field(blocks, 82)
    sc = bit_planes(blocks, 0, 16, (0, 4), 0x0F, 16)  # (n, 1, 2, 16): scales, then mins
    q = bit_planes(blocks, 16, 80, CRUMBS, 3, 32).reshape(n, QK_K)
    scale = d * sc[:, 0, 0].astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, sc[:, 0, 1]), 16)


def q3_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d = f16_field(blocks, 108)
    # 16 6-bit scales: low 4 bits from bytes 96-103 (low nibbles, then high), top 2 from 104-107.
    low = bit_planes(blocks, 96, 104, (0, 4), 0x0F, 8).reshape(n, 16)
    high = bit_planes(blocks, 104, 108, CRUMBS, 3, 4).reshape(n, 16)
    s6 = (low | (high << 4)).view(np.int8) - np.int8(32)
    scale = d * s6.astype(np.float32)
    q = bit_planes(blocks, 32, 96, CRUMBS, 3, 32).reshape(n, QK_K).view(np.int8)
    # The high bit set means "no offset": q - 4 * (1 - hbit).
    h = bit_planes(blocks, 0, 32, BITS, 1, 32).reshape(n, QK_K)
    np.bitwise_xor(h, 1, out=h)
    np.left_shift(h, 2, out=h)
    np.subtract(q, h.view(np.int8), out=q)
    return BlockArrays(q, scale, None, 16)


def q4_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    q = bit_planes(blocks, 16, 144, (0, 4), 0x0F, 32).reshape(n, QK_K)
    scale = d * sc.astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, mn), 32)


def q5_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    q = bit_planes(blocks, 48, 176, (0, 4), 0x0F, 32).reshape(n, QK_K)
    h = bit_planes(blocks, 16, 48, BITS, 1, 32).reshape(n, QK_K)
    np.left_shift(h, 4, out=h)
    np.bitwise_or(q, h, out=q)
    scale = d * sc.astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, mn), 32)


def q6_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d = f16_field(blocks, 208)
    low = bit_planes(blocks, 0, 128, (0, 4), 0x0F, 64).reshape(n, QK_K)
    high = bit_planes(blocks, 128, 192, CRUMBS, 3, 32).reshape(n, QK_K)
    np.left_shift(high, 4, out=high)
    np.bitwise_or(low, high, out=low)
    q = low.view(np.int8)
    np.subtract(q, np.int8(32), out=q)
    scale = d * blocks[:, 192:208].view(np.int8).astype(np.float32)
    return BlockArrays(q, scale, None, 16)
