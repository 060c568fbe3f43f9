"""The matmul kernel behind every weight, and the tile size packed weights dequantize in.

The best float32 kernel differs by platform: CPython's NumPy has BLAS (`x @ W.T`),
Pyodide's has none, and there `np.einsum` is 2-6x faster than `@` (docs/performance.md).
Everything that multiplies by a weight goes through `matmul_t`/`matmul` with the backend
its owner was built with (a model's kernel set passes its own down to its weights), so
two models in one process, or a benchmark comparing both kernels, never share a switch.
"""

from __future__ import annotations

import sys
from typing import Any, Final, Literal, cast

import numpy as np

F32 = np.ndarray[Any, np.dtype[np.float32]]
MatmulBackend = Literal["blas", "einsum"]

# Packed weights are dequantized this many weights at a time into a scratch tile and
# multiplied tile by tile: a 4 MB tile stays in cache, measured as fast as (or, for a
# 49152x576 lm-head, 40% faster than) dequantizing the whole matrix first, and it keeps
# the scratch buffer small even for Gemma's 262144x640 embedding.
TILE_WEIGHTS = 1 << 20

# The platform's fastest kernel: what every weight and kernel set uses unless told otherwise.
DEFAULT_BACKEND: Final[MatmulBackend] = "einsum" if sys.platform == "emscripten" else "blas"


def checked_backend(name: str) -> MatmulBackend:
    if name in ("blas", "einsum"):
        return cast(MatmulBackend, name)
    raise ValueError(f"unknown matmul backend {name!r} (expected 'blas' or 'einsum')")


def matmul_t(x: F32, w: F32, out: F32 | None = None, backend: MatmulBackend = DEFAULT_BACKEND) -> F32:
    """x (L, n_in) times w (n_out, n_in) transposed -> (L, n_out) float32 (into `out` if given)."""
    y: F32 = np.einsum("ij,kj->ik", x, w, out=out) if backend == "einsum" else np.matmul(x, w.T, out=out)
    return y


def matmul(x: F32, wt: F32, out: F32 | None = None, backend: MatmulBackend = DEFAULT_BACKEND) -> F32:
    """x (L, n_in) times wt (n_in, n_out) -> (L, n_out) float32 (into `out` if given)."""
    y: F32 = np.einsum("ij,jk->ik", x, wt, out=out) if backend == "einsum" else np.matmul(x, wt, out=out)
    return y


def tile_rows(n_cols: int) -> int:
    """Rows of a (n_rows, n_cols) weight that fit in one scratch tile (at least one)."""
    return max(1, TILE_WEIGHTS // n_cols)
