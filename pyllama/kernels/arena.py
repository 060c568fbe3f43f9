"""One model's dense fused weights placed side by side in a few large blocks.

WHY: a decode step streams every weight once, and on Linux a stream over 4 KiB pages pays
a TLB miss per page. NumPy asks the kernel for transparent huge pages (madvise) only for
arrays of 4 MiB or more, and most matrices of a small model are smaller (SmolLM2's fused
Q/K/V is 2.2 MB, its output projection 1.3 MB), so allocated one by one they sit on small
pages. Carved out of 64 MiB blocks they are on huge pages, in the order a forward pass
reads them (docs/performance.md, "Weight arena", has the measurement).

Space a block cannot fit at its end is never written, so it is never resident either.
Each model's kernel set holds its own arena: nothing here is shared between models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

F32 = np.ndarray[Any, np.dtype[np.float32]]
BLOCK_FLOATS = (64 << 20) // 4
ALIGN_FLOATS = 16  # 64 bytes: every matrix starts on a cache line


class WeightArena:
    def __init__(self, block_floats: int = BLOCK_FLOATS) -> None:
        self.block_floats = block_floats
        self._block: F32 | None = None
        self._used = 0

    def empty(self, shape: tuple[int, ...]) -> F32:
        """An uninitialised C-contiguous float32 array of `shape`, carved from the current block
        (a matrix of half a block or more gets its own allocation: it is huge-paged alone)."""
        n = math.prod(shape)
        if 2 * n >= self.block_floats:
            return np.empty(shape, dtype=np.float32)
        if self._block is None or self._used + n > self._block.size:
            self._block = np.empty(self.block_floats, dtype=np.float32)
            self._used = (-self._block.ctypes.data % (4 * ALIGN_FLOATS)) // 4
        out = self._block[self._used : self._used + n].reshape(shape)
        self._used += -(-n // ALIGN_FLOATS) * ALIGN_FLOATS
        return out
