"""Reading the bit-packed fields of ggml blocks with whole-array NumPy operations.

Every ggml type stores small integers the same way: a run of bytes in which bits
[s, s + width) of each byte belong to a different run of weights. `bit_planes` pulls
all those planes out at once. It works on whole contiguous rows, as 32- or 16-bit words
where alignment allows, because NumPy ufuncs over many short strided rows pay a
per-row cost: measured 2x slower natively and 4x slower under Pyodide than this form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

U8 = np.ndarray[Any, np.dtype[np.uint8]]
F32 = np.ndarray[Any, np.dtype[np.float32]]


def f16_field(blocks: U8, start: int) -> F32:
    """The little-endian float16 at byte `start` of every block, as a float32 column (n, 1)."""
    return blocks[:, start : start + 2].view("<f2").astype(np.float32)


def _word_size(n_bytes: int, start: int, stop: int) -> int:
    for size in (4, 2):
        if n_bytes % size == 0 and start % size == 0 and stop % size == 0:
            return size
    return 1


def bit_planes(blocks: U8, start: int, stop: int, shifts: Sequence[int], mask: int, chunk: int) -> U8:
    """Bit fields of bytes blocks[:, start:stop], plane by plane.

    Returns (n, (stop - start) // chunk, len(shifts), chunk): for each run of `chunk`
    bytes, the values (byte >> s) & mask for every s in `shifts`. Reshaped to
    (n, -1) this is ggml's weight order for all types here (e.g. Q4_0: 16 low nibbles,
    then 16 high nibbles). Requires mask <= 0xFF >> max(shifts): shifting whole words
    then lets no bit of a neighbouring byte survive the mask.
    """
    n, type_size = blocks.shape
    if 2 * (stop - start) < type_size:
        # A small field (e.g. Q5_K's 32 bytes of high bits): copy it out once instead of
        # shifting the whole block many times.
        src, lo, hi = np.ascontiguousarray(blocks[:, start:stop]), 0, stop - start
    else:
        src, lo, hi = np.ascontiguousarray(blocks), start, stop
    size = _word_size(src.shape[1], lo, hi)
    words = src.view(f"<u{size}")
    word_mask = int.from_bytes(bytes([mask]) * size, "little")
    planes = []
    for s in shifts:
        plane = np.right_shift(words, s) if s else words.copy()
        np.bitwise_and(plane, word_mask, out=plane)
        planes.append(plane.view(np.uint8)[:, lo:hi].reshape(n, -1, 1, chunk))
    return np.concatenate(planes, axis=2)


def low_bits_of_u32(blocks: U8, start: int) -> U8:
    """Bit j of the little-endian uint32 at byte `start` of each block, as (n, 32) of 0/1."""
    field = np.ascontiguousarray(blocks[:, start : start + 4]).reshape(-1)
    return np.unpackbits(field, bitorder="little").reshape(blocks.shape[0], 32)
