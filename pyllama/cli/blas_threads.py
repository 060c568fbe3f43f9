"""BLAS thread count at run time, for `pyllama bench -t`.

OpenBLAS reads OPENBLAS_NUM_THREADS only when NumPy is first imported (pyllama.cli.main
sets it before that). When NumPy is already loaded -- `main()` called in-process, or a
caller that imported NumPy first -- only OpenBLAS's own `*_set_num_threads` entry point
changes it, so we find the library NumPy links against and call that through ctypes (what
threadpoolctl does, without the dependency). Without OpenBLAS (Pyodide has no BLAS, or a
NumPy built on MKL/Accelerate) the functions report None and change nothing.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from functools import cache

# (setter, getter) symbol pairs: NumPy's wheels (scipy-openblas, 64-bit ints) and a system OpenBLAS
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@cache
def _openblas() -> tuple[ctypes.CDLL, str, str] | None:
    if sys.platform == "emscripten":
        return None
    import numpy as np

    root = os.path.dirname(os.path.dirname(np.__file__))
    candidates = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))
    candidates += sorted(glob.glob(os.path.join(root, "numpy", ".dylibs", "*openblas*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in _SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                return lib, setter, getter
    return None


def get_threads() -> int | None:
    """OpenBLAS's current thread count, or None when NumPy does not use OpenBLAS."""
    found = _openblas()
    if found is None:
        return None
    lib, _, getter = found
    return int(getattr(lib, getter)())


def set_threads(n: int) -> bool:
    """Set OpenBLAS's thread count now (and the env vars, for child processes); False if not possible."""
    if n <= 0:
        raise ValueError(f"thread count must be positive, got {n}")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    found = _openblas()
    if found is None:
        return False
    lib, setter, _ = found
    getattr(lib, setter)(ctypes.c_int(n))
    return get_threads() == n
