"""BLAS thread counts for `-t/--threads` and `-tb/--threads-batch`, through threadpoolctl.

The engine itself never touches threads (it must run under Pyodide, where there is no
BLAS): thread control lives at the edges. The CLI and the server build a `BlasThreads`
from their flags and hand it to the scheduler as its `threads` hook, which enters it
around every forward pass: a pass over one token (a decode step of one slot) runs on
`-t` threads, a pass over several tokens (prompt chunks, several slots, a speculative
batch) on `-tb` threads -- llama.cpp's rule (llama_context::graph_compute: n_tokens > 1
uses n_threads_batch).

threadpoolctl finds every BLAS NumPy carries (OpenBLAS in NumPy's wheels, MKL, BLIS,
Accelerate) and sets its thread count at run time, after NumPy is loaded. Without it
(or without a BLAS: Pyodide) the functions report None and change nothing.

Why the default is one thread (DEFAULT_THREADS): decoding a small model is bound by memory
bandwidth, which one core nearly saturates, and OpenBLAS's worker threads spin while they
wait for work. On a machine where anything else runs, a second BLAS thread that loses its
core makes every matmul wait for it: with a busy process beside it, 2 threads fell to a
fraction of 1 thread's speed (docs/performance.md, "Threads"). Prompt batches are compute
bound and gain from more threads on a quiet machine, so `-tb` is there to ask for them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import Any

# The default for -t (and -tb, which follows -t unless given), chosen by measurement:
# see the module docstring and docs/performance.md.
DEFAULT_THREADS = 1

THREADS_HELP = (
    f"BLAS threads for generation (decode steps of one token) (default: {DEFAULT_THREADS}: one core nearly "
    "saturates memory bandwidth, and a second BLAS thread collapses when another process "
    "shares the CPU; see docs/performance.md)"
)
THREADS_BATCH_HELP = "BLAS threads for batches of several tokens: prompts, several slots, speculative drafts (default: same as --threads)"


@cache
def _controller() -> Any:
    """threadpoolctl's controller over the BLAS libraries NumPy loaded, or None."""
    try:
        import numpy  # noqa: F401  (load NumPy's BLAS before threadpoolctl looks for it)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


def info() -> list[dict[str, Any]]:
    """threadpoolctl's description of each BLAS (library, version, num_threads), for /props."""
    controller = _controller()
    return [] if controller is None else list(controller.info())


def get_threads() -> int | None:
    """The BLAS thread count now (the largest over the libraries), or None without a BLAS."""
    controller = _controller()
    if controller is None:
        return None
    return max(int(lib.num_threads) for lib in controller.lib_controllers)


def set_threads(n: int) -> bool:
    """Set every BLAS's thread count now (and the variables, for child processes); False if
    there is no BLAS to set or it refused (e.g. OpenBLAS built for fewer threads)."""
    if n <= 0:
        raise ValueError(f"thread count must be positive, got {n}")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    controller = _controller()
    if controller is None:
        return False
    for lib in controller.lib_controllers:
        lib.set_num_threads(n)
    return get_threads() == n


def check_count(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be at least 1 (got {value})")


class BlasThreads:
    """The scheduler's `threads` hook: `with hook(n_tokens): forward pass`.

    The count is set only when it changes (with -t equal to -tb, once), so the hook costs
    nothing per step; it is not restored on exit because the process's BLAS serves this
    model only.
    """

    def __init__(self, n_threads: int | None = None, n_threads_batch: int | None = None) -> None:
        check_count(n_threads, "--threads")
        check_count(n_threads_batch, "--threads-batch")
        self.n_threads = n_threads or DEFAULT_THREADS
        self.n_threads_batch = n_threads_batch or self.n_threads
        self._current: int | None = None
        self.available = _controller() is not None
        if self.available:
            self._set(self.n_threads)

    def _set(self, n: int) -> None:
        if n != self._current:
            set_threads(n)
            self._current = n

    @contextlib.contextmanager
    def __call__(self, n_tokens: int) -> Iterator[None]:
        if self.available:
            self._set(self.n_threads_batch if n_tokens > 1 else self.n_threads)
        yield

    def props(self) -> dict[str, Any]:
        """What /props reports: the two counts and what each BLAS runs right now."""
        return {"n_threads": self.n_threads, "n_threads_batch": self.n_threads_batch,
                "blas": [{k: lib.get(k) for k in ("internal_api", "version", "num_threads")} for lib in info()]}
