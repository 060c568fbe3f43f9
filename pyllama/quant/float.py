"""Unquantized types. F32 and F16 stay as they are; BF16 keeps its 16-bit patterns.

Nothing here is "dequantized" in the block sense: these layouts exist so that packed
mode can hold the file's own bytes (half the memory of float32 for F16/BF16) and
convert per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.quant.layout import BFloat16Bits, FloatValues

U8 = np.ndarray[Any, np.dtype[np.uint8]]


def f32(data: U8, n_rows: int, n_cols: int) -> FloatValues:
    return FloatValues(data.view(np.float32).reshape(n_rows, n_cols))


def f16(data: U8, n_rows: int, n_cols: int) -> FloatValues:
    return FloatValues(data.view(np.float16).reshape(n_rows, n_cols))


def bf16(data: U8, n_rows: int, n_cols: int) -> BFloat16Bits:
    return BFloat16Bits(data.view(np.int16).reshape(n_rows, n_cols))
