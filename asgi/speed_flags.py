"""llama-server's thread and speculative-decoding flags (issue 18), as rows of asgi.flags' table.

Kept apart from the main table so the two grow without touching each other; each row is
(names, dest, kind, help[, env]) exactly as `asgi.flags._f` takes them. Names, variables
and defaults follow llama.cpp's common/arg.cpp.
"""

from __future__ import annotations

from pyllama.cli.blas_threads import THREADS_BATCH_HELP, THREADS_HELP

SPEED_FLAGS: list[tuple[str, ...]] = [
    ("-t --threads", "threads", "int", THREADS_HELP, "LLAMA_ARG_THREADS"),
    ("-tb --threads-batch", "threads_batch", "int", THREADS_BATCH_HELP),
]
