"""llama-server's thread and speculative-decoding flags (issue 18), as rows of asgi.flags' table.

Kept apart from the main table so the two grow without touching each other; each row is
(names, dest, kind, help[, env]) exactly as `asgi.flags._f` takes them. Names, variables
and defaults follow llama.cpp's common/arg.cpp (common_params_speculative in common.h).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asgi.startup_checks import SettingsError
from pyllama.cli.blas_threads import THREADS_BATCH_HELP, THREADS_HELP
from pyllama.cli.spec_args import SPEC_FLAGS, speculative_settings

if TYPE_CHECKING:
    from asgi.settings import Settings

log = logging.getLogger("asgi.settings")

SPEED_FLAGS: list[tuple[str, ...]] = [
    ("-t --threads", "threads", "int", THREADS_HELP, "LLAMA_ARG_THREADS"),
    ("-tb --threads-batch", "threads_batch", "int", THREADS_BATCH_HELP),
    *SPEC_FLAGS,
]


def apply_speed(settings: Settings, values: dict[str, Any]) -> None:
    """-t/-tb (llama.cpp: a value <= 0 means every core) and speculative decoding."""
    for dest in ("threads", "threads_batch"):
        if dest in values:
            n = int(values[dest])
            setattr(settings, f"n_{dest}", n if n > 0 else os.cpu_count() or 1)
    try:
        settings.speculative, unsupported = speculative_settings(values)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    for name in unsupported:
        log.warning("--spec-type %s is not implemented in pyllama: ignored", name)
    if values.get("model_draft"):
        settings.model_draft = Path(values["model_draft"])
        if not settings.model_draft.is_file():
            raise SettingsError(f"draft model file not found: {settings.model_draft}")
