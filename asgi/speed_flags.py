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

if TYPE_CHECKING:
    from asgi.settings import Settings

log = logging.getLogger("asgi.settings")

_NGRAM = "ngram size {0} for {1} speculative decoding, length of {2} (default: {3})"

SPEED_FLAGS: list[tuple[str, ...]] = [
    ("-t --threads", "threads", "int", THREADS_HELP, "LLAMA_ARG_THREADS"),
    ("-tb --threads-batch", "threads_batch", "int", THREADS_BATCH_HELP),
    ("--spec-type", "spec_type", "list",
     "comma-separated types of speculative decoding: ngram-simple, ngram-map-k, draft-simple run here; "
     "llama.cpp's other names are accepted with a note; repeatable (default: none; -md adds draft-simple)", "LLAMA_ARG_SPEC_TYPE"),
    ("-md --model-draft --spec-draft-model", "model_draft", "str",
     "draft model for speculative decoding (a GGUF with the model's vocabulary; default: unused)",
     "LLAMA_ARG_SPEC_DRAFT_MODEL"),
    ("--spec-draft-n-max", "spec_draft_n_max", "int", "number of tokens to draft for speculative decoding (default: 3)",
     "LLAMA_ARG_SPEC_DRAFT_N_MAX"),
    ("--spec-draft-n-min", "spec_draft_n_min", "int", "minimum number of draft tokens to use for speculative decoding "
     "(default: 0)", "LLAMA_ARG_SPEC_DRAFT_N_MIN"),
    ("--spec-draft-p-min --draft-p-min", "spec_draft_p_min", "float",
     "minimum speculative decoding probability (greedy) (default: 0.00)", "LLAMA_ARG_SPEC_DRAFT_P_MIN"),
    ("--spec-ngram-simple-size-n", "spec_ngram_simple_size_n", "int", _NGRAM.format("N", "ngram-simple", "lookup n-gram", 12)),
    ("--spec-ngram-simple-size-m", "spec_ngram_simple_size_m", "int", _NGRAM.format("M", "ngram-simple", "draft m-gram", 48)),
    ("--spec-ngram-simple-min-hits", "spec_ngram_simple_min_hits", "int", "minimum hits for ngram-simple speculative decoding (default: 1)"),
    ("--spec-ngram-map-k-size-n", "spec_ngram_map_k_size_n", "int", _NGRAM.format("N", "ngram-map-k", "lookup n-gram", 12)),
    ("--spec-ngram-map-k-size-m", "spec_ngram_map_k_size_m", "int", _NGRAM.format("M", "ngram-map-k", "draft m-gram", 48)),
    ("--spec-ngram-map-k-min-hits", "spec_ngram_map_k_min_hits", "int", "minimum hits for ngram-map-k speculative decoding (default: 1)"),
]


def speculative_settings(values: dict[str, object]) -> tuple[object, list[str]]:
    """The server's default SpecParams from the flags, and the --spec-type names it cannot run.
    ValueError (one line) for a value llama.cpp would refuse."""
    from pyllama.speculative import NgramParams, SpecParams, parse_types

    given = values.get("spec_type", [])
    types, unsupported = parse_types(",".join(given) if isinstance(given, list) else str(given))
    if values.get("model_draft") and not any(t.startswith("draft-") for t in types):
        types = (*types, "draft-simple")
    if "draft-simple" in types and not values.get("model_draft"):
        raise ValueError("--spec-type draft-simple needs a draft model (-md FILE)")

    def number(dest: str, default: int, lo: int) -> int:
        value = int(str(values.get(dest, default)))
        if not lo <= value <= 1024:
            raise ValueError(f"--{dest.replace('_', '-')} must be between {lo} and 1024 (got {value})")
        return value

    def ngram(kind: str) -> NgramParams:
        return NgramParams(number(f"spec_ngram_{kind}_size_n", 12, 1), number(f"spec_ngram_{kind}_size_m", 48, 1),
                           number(f"spec_ngram_{kind}_min_hits", 1, 1))

    p_min = float(str(values.get("spec_draft_p_min", 0.0)))
    if not 0.0 <= p_min <= 1.0:
        raise ValueError(f"--spec-draft-p-min must be between 0 and 1 (got {p_min:g})")
    spec = SpecParams(types=types, n_max=number("spec_draft_n_max", 3, 0), n_min=number("spec_draft_n_min", 0, 0),
                      p_min=p_min, ngram_simple=ngram("simple"), ngram_map_k=ngram("map_k"))
    return spec, unsupported


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
