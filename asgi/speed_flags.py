"""llama-server's thread and speculative-decoding flags (issue 18), as rows of asgi.flags' table.

Kept apart from the main table so the two grow without touching each other; each row is
(names, dest, kind, help[, env]) exactly as `asgi.flags._f` takes them. Names, variables
and defaults follow llama.cpp's common/arg.cpp (common_params_speculative in common.h).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgi.startup_checks import SettingsError
from pyllama.cli.blas_threads import THREADS_BATCH_HELP, THREADS_HELP
from pyllama.cli.spec_args import SPEC_FLAGS, speculative_settings

log = logging.getLogger("asgi.settings")

SPEED_FLAGS: list[tuple[str, ...]] = [
    ("-t --threads", "threads", "int", THREADS_HELP, "LLAMA_ARG_THREADS"),
    ("-tb --threads-batch", "threads_batch", "int", THREADS_BATCH_HELP),
    *SPEC_FLAGS,
]


@dataclass
class SpeedSettings:
    """What the thread and speculative flags ask for (copied into `Settings`)."""

    n_threads: int | None = None
    n_threads_batch: int | None = None
    speculative: Any = None
    model_draft: Path | None = None


def speed_settings(values: dict[str, Any]) -> SpeedSettings:
    """-t/-tb (llama.cpp: a value <= 0 means every core) and speculative decoding."""
    out = SpeedSettings()
    for dest in ("threads", "threads_batch"):
        if dest in values:
            n = int(values[dest])
            setattr(out, f"n_{dest}", n if n > 0 else os.cpu_count() or 1)
    try:
        out.speculative, unsupported = speculative_settings(values)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if out.speculative.synth_probs:
        log.warning("synthetic speculative acceptance is enabled for benchmarking; generated output is not valid")
    mod = out.speculative.ngram_mod
    if "ngram-mod" in out.speculative.types and mod.n_match < 16:  # llama.cpp's warning
        log.warning("ngram_mod n_match=%d is too small - poor quality is possible, "
                    "see: https://github.com/ggml-org/llama.cpp/pull/19164", mod.n_match)
    for name in unsupported:
        log.warning("--spec-type %s is not implemented in pyllama: ignored", name)
    if values.get("model_draft"):
        out.model_draft = Path(values["model_draft"])
        if not out.model_draft.is_file():
            raise SettingsError(f"draft model file not found: {out.model_draft}")
    return out
