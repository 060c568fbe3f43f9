"""Kernel sets: the numerics a model computes with, chosen per model at load.

`fast` (plain float32, BLAS on CPython, einsum under Pyodide) and `exact` (ggml's CPU
arithmetic replayed, reproducing llama.cpp's tokens). See kernels/base.py for the ops.
"""

from __future__ import annotations

from pyllama.errors import InvalidRequestError
from pyllama.kernels.base import AttentionPass, Kernels, NumericsName, Projection, Rope
from pyllama.kernels.exact import ExactKernels
from pyllama.kernels.fast import FastKernels
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend


def kernels_for(name: str, backend: MatmulBackend = DEFAULT_BACKEND) -> Kernels:
    """A fresh kernel set for `numerics` name (each model holds its own), multiplying with
    `backend` (BLAS, or einsum without one)."""
    if name == "fast":
        return FastKernels(backend)
    if name == "exact":
        return ExactKernels(backend)
    raise InvalidRequestError(f"numerics must be fast or exact, not {name!r}")


__all__ = ["AttentionPass", "ExactKernels", "FastKernels", "Kernels", "NumericsName", "Projection", "Rope",
           "kernels_for"]
