"""Pooling and normalisation of hidden states into embeddings (llama.cpp's --pooling, --embd-normalize)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.errors import InvalidRequestError

F32 = np.ndarray[Any, np.dtype[np.float32]]

POOLING = ("none", "mean", "cls", "last")


def pool(hidden: F32, pooling: str) -> F32:
    """(T, D) hidden states of one sequence -> (1, D) pooled, or (T, D) for `none`."""
    if pooling == "none":
        return hidden
    if pooling == "mean":
        return np.asarray(hidden.mean(axis=0, keepdims=True, dtype=np.float64), dtype=np.float32)
    if pooling == "cls":
        return hidden[:1]
    if pooling == "last":
        return hidden[-1:]
    raise InvalidRequestError(f"unknown pooling {pooling!r} (supported: {', '.join(POOLING)})")


def normalize(v: F32, mode: int) -> F32:
    """common_embd_normalize: -1 none, 0 max-abs (int16 scale), 1 taxicab, 2 euclidean, >2 p-norm."""
    x = v.astype(np.float64)
    if mode < 0:
        s = 1.0
    elif mode == 0:
        s = float(np.abs(x).max()) / 32760.0
    elif mode == 1:
        s = float(np.abs(x).sum())
    elif mode == 2:
        s = float(np.sqrt((x * x).sum()))
    else:
        s = float((np.abs(x) ** mode).sum() ** (1.0 / mode))
    norm = 1.0 / s if s > 0 else 0.0
    return np.asarray(x * norm, dtype=np.float32)
