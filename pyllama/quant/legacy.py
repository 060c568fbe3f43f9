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

from pyllama.quant.bits import bit_planes, f16_field, low_bits_of_u32
from pyllama.quant.layout import I8, BlockArrays

U8 = np.ndarray[Any, np.dtype[np.uint8]]


def _nibbles(blocks: U8, start: int) -> U8:
    """The 16 bytes of nibbles at `start` -> 32 4-bit values per block in weight order."""
    return bit_planes(blocks, start, start + 16, (0, 4), 0x0F, 16).reshape(blocks.shape[0], 32)


def _with_high_bit(low: U8, blocks: U8, start: int) -> U8:
    high = low_bits_of_u32(blocks, start)
    np.left_shift(high, 4, out=high)
    np.bitwise_or(low, high, out=low)
    return low


def _as_codes(values: U8, offset: int) -> I8:
    codes = values.view(np.int8)
    if offset:
        np.subtract(codes, np.int8(offset), out=codes)
    return codes


def q4_0(blocks: U8) -> BlockArrays:
    return BlockArrays(_as_codes(_nibbles(blocks, 2), 8), f16_field(blocks, 0), None, 32)


def q4_1(blocks: U8) -> BlockArrays:
    return BlockArrays(_as_codes(_nibbles(blocks, 4), 0), f16_field(blocks, 0), f16_field(blocks, 2), 32)


def q5_0(blocks: U8) -> BlockArrays:
    q = _with_high_bit(_nibbles(blocks, 6), blocks, 2)
    return BlockArrays(_as_codes(q, 16), f16_field(blocks, 0), None, 32)


def q5_1(blocks: U8) -> BlockArrays:
    q = _with_high_bit(_nibbles(blocks, 8), blocks, 4)
    return BlockArrays(_as_codes(q, 0), f16_field(blocks, 0), f16_field(blocks, 2), 32)


def q8_0(blocks: U8) -> BlockArrays:
    return BlockArrays(blocks[:, 2:].view(np.int8), f16_field(blocks, 0), None, 32)
