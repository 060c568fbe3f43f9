"""Dropping the memory-mapped file pages under a tensor once they have been read.

Lives here (not in pyllama.models) because repack() releases each tile's source rows as
soon as they are decoded; pyllama.models.base re-exports it for whole tensors.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np


def release_file_pages(data: np.ndarray[Any, Any]) -> None:
    """Let the OS drop the memory-mapped file pages under `data` from this process.

    WHY: repacking or dequantizing a tensor reads every page of it, and those clean file
    pages then stay in the process's resident set next to the copy made from them (for
    packed SmolLM2: 94 MB of file on top of 157 MB of codes). MADV_DONTNEED unmaps them;
    a later read (exact kernels built lazily, a fused repack) faults them back in from
    the page cache. No-op without a real mmap (Pyodide buffers, bytes) or madvise.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    parent: np.ndarray[Any, Any] | None = None
    base: Any = data
    while isinstance(base, np.ndarray):
        parent, base = base, base.base
    if advice is None or parent is None or not isinstance(base, mmap.mmap) or not data.flags.c_contiguous:
        return
    offset = parent.offset % mmap.ALLOCATIONGRANULARITY if isinstance(parent, np.memmap) else 0
    origin = int(parent.__array_interface__["data"][0]) - offset
    start = int(data.__array_interface__["data"][0]) - origin
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, (start + data.nbytes) // page * page
    if last > first:
        try:
            base.madvise(advice, first, last - first)
        except (OSError, ValueError):
            return
