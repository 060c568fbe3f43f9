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

from pyllama.quant.layout import F32, BlockArrays, f16_field, nibbles

U8 = np.ndarray[Any, np.dtype[np.uint8]]
QK_K = 256


def _shifted(packed: U8, shifts: tuple[int, ...], mask: int) -> U8:
    """(n, c, k) bytes -> (n, c, len(shifts), k) of (byte >> shift) & mask."""
    out = np.empty((*packed.shape[:-1], len(shifts), packed.shape[-1]), dtype=np.uint8)
    for i, s in enumerate(shifts):
        np.right_shift(packed, s, out=out[..., i, :])
    np.bitwise_and(out, mask, out=out)
    return out


def _hbits(hmask: U8) -> U8:
    """32 bytes per block -> 256 bits: weight i*32 + j takes bit i of byte j."""
    n = hmask.shape[0]
    return _shifted(hmask.reshape(n, 1, 32), tuple(range(8)), 1).reshape(n, QK_K)


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
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = f16_field(blocks, 80), f16_field(blocks, 82)
    q = _shifted(qs.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, QK_K)
    scale = d * (scales & 0x0F).astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, scales >> 4), 16)


def q3_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    hmask, qs, sc = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    d = f16_field(blocks, 108)
    # 16 6-bit scales: low 4 bits from bytes 0-7 (low nibbles, then high), top 2 from 8-11.
    low = nibbles(sc[:, :8]).reshape(n, 16)
    high = _shifted(sc[:, 8:12].reshape(n, 1, 4), (0, 2, 4, 6), 3).reshape(n, 16)
    s6 = (low | (high << 4)).view(np.int8) - np.int8(32)
    scale = d * s6.astype(np.float32)
    q = _shifted(qs.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, QK_K).view(np.int8)
    # The high bit set means "no offset": q - 4 * (1 - hbit).
    h = _hbits(hmask)
    np.bitwise_xor(h, 1, out=h)
    np.left_shift(h, 2, out=h)
    np.subtract(q, h.view(np.int8), out=q)
    return BlockArrays(q, scale, None, 16)


def q4_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    q = nibbles(blocks[:, 16:].reshape(n, 4, 32)).reshape(n, QK_K)
    scale = d * sc.astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, mn), 32)


def q5_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    q = nibbles(blocks[:, 48:].reshape(n, 4, 32)).reshape(n, QK_K)
    h = _hbits(blocks[:, 16:48])
    np.left_shift(h, 4, out=h)
    np.bitwise_or(q, h, out=q)
    scale = d * sc.astype(np.float32)
    return BlockArrays(q.view(np.int8), scale, _neg_product(dmin, mn), 32)


def q6_k(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    ql, qh, sc = blocks[:, :128], blocks[:, 128:192], blocks[:, 192:208]
    d = f16_field(blocks, 208)
    low = nibbles(ql.reshape(n, 2, 64)).reshape(n, QK_K)
    high = _shifted(qh.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, QK_K)
    np.left_shift(high, 4, out=high)
    np.bitwise_or(low, high, out=low)
    q = low.view(np.int8)
    np.subtract(q, np.int8(32), out=q)
    scale = d * sc.view(np.int8).astype(np.float32)
    return BlockArrays(q, scale, None, 16)
