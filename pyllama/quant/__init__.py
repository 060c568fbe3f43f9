"""Dequantization of ggml tensor types into float32.

Placeholder that delegates to gguf.quants; replaced by vectorized per-family modules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf import quants as _gguf_quants
from gguf.constants import GGMLQuantizationType

SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    GGMLQuantizationType[n]
    for n in (
        "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS".split()
    )
)


def dequantize(
    data: np.ndarray[Any, np.dtype[np.uint8]], qtype: GGMLQuantizationType, shape: tuple[int, ...]
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Raw bytes of a tensor -> float32 array of `shape` (NumPy order)."""
    out = _gguf_quants.dequantize(np.asarray(data), qtype)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(shape)
