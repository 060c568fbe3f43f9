"""Non-linear 4-bit types: nibbles index a fixed table of 16 int8 levels (kvalues_iq4nl).

    IQ4_NL  32-weight blocks: d, 16 bytes of nibbles         w = d * K[q]
    IQ4_XS  256-weight blocks: d, 8 6-bit signed scales       w = (d * (ls - 32)) * K[q]

Repacking applies the table once, so the hot path sees ordinary int8 codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.quant.bits import bit_planes, f16_field
from pyllama.quant.layout import BlockArrays

U8 = np.ndarray[Any, np.dtype[np.uint8]]

KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8
)


def iq4_nl(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    q = bit_planes(blocks, 2, 18, (0, 4), 0x0F, 16).reshape(n, 32)
    return BlockArrays(KVALUES_IQ4NL[q], f16_field(blocks, 0), None, 32)


def iq4_xs(blocks: U8) -> BlockArrays:
    n = blocks.shape[0]
    d = f16_field(blocks, 0)
    scales_h = blocks[:, 2:4].view(np.uint16)  # (n, 1): 2 high bits for each of 8 groups
    low = bit_planes(blocks, 4, 8, (0, 4), 0x0F, 1).reshape(n, 8)  # groups 2i, 2i+1 from byte i
    high = (scales_h >> np.arange(0, 16, 2, dtype=np.uint16)).astype(np.uint8) & 0x03
    ls = (low | (high << 4)).view(np.int8) - np.int8(32)
    q = bit_planes(blocks, 8, 136, (0, 4), 0x0F, 16).reshape(n, 256)
    return BlockArrays(KVALUES_IQ4NL[q], d * ls.astype(np.float32), None, 32)
