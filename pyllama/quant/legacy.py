"""The original ggml block types: 32 weights per block, one float16 scale (and min).

    Q4_0  d, 16 bytes of nibbles           w = d * (q - 8)
    Q4_1  d, m, 16 bytes of nibbles        w = d * q + m
    Q5_0  d, 4 bytes high bits, nibbles    w = d * (q - 16)
    Q5_1  d, m, 4 bytes high bits, nibbles w = d * q + m
    Q8_0  d, 32 int8                       w = d * q

Nibble order (ggml): byte j holds weight j in its low half and weight j + 16 in its high
half. The 5th bit of weight j is bit j of a little-endian uint32.
Each function turns (n_blocks, type_size) raw bytes into BlockArrays with no Python loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.quant.layout import BlockArrays, f16_field, nibbles

U8 = np.ndarray[Any, np.dtype[np.uint8]]


def _low4(qs: U8) -> U8:
    """16 bytes of nibbles per block -> 32 4-bit values per block in weight order."""
    return nibbles(qs).reshape(qs.shape[0], 32)


def _high_bits(qh: U8) -> U8:
    """4 bytes (a little-endian uint32) per block -> bit j as value (j-th weight's 5th bit) << 4."""
    bits = np.unpackbits(qh, axis=1, bitorder="little")
    return np.left_shift(bits, 4, out=bits)


def _as_codes(values: U8, offset: int) -> np.ndarray[Any, np.dtype[np.int8]]:
    codes = values.view(np.int8)
    if offset:
        np.subtract(codes, np.int8(offset), out=codes)
    return codes


def q4_0(blocks: U8) -> BlockArrays:
    return BlockArrays(_as_codes(_low4(blocks[:, 2:]), 8), f16_field(blocks, 0), None, 32)


def q4_1(blocks: U8) -> BlockArrays:
    return BlockArrays(_as_codes(_low4(blocks[:, 4:]), 0), f16_field(blocks, 0), f16_field(blocks, 2), 32)


def q5_0(blocks: U8) -> BlockArrays:
    q = _low4(blocks[:, 6:])
    np.bitwise_or(q, _high_bits(blocks[:, 2:6]), out=q)
    return BlockArrays(_as_codes(q, 16), f16_field(blocks, 0), None, 32)


def q5_1(blocks: U8) -> BlockArrays:
    q = _low4(blocks[:, 8:])
    np.bitwise_or(q, _high_bits(blocks[:, 4:8]), out=q)
    return BlockArrays(_as_codes(q, 0), f16_field(blocks, 0), f16_field(blocks, 2), 32)


def q8_0(blocks: U8) -> BlockArrays:
    return BlockArrays(blocks[:, 2:].view(np.int8), f16_field(blocks, 0), None, 32)
