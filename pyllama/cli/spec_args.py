"""llama.cpp's speculative-decoding flags, shared by `pyllama run` and `pyllama-server`.

One table of (names, dest, kind, help[, env]) rows -- names, variables and defaults from
llama.cpp's common/arg.cpp -- read into argparse here for the CLI and into asgi.flags'
table for the server; `speculative_settings` turns the parsed values into the
scheduler's default SpecParams for both.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyllama.speculative import SpecParams

_NGRAM = "ngram size {0} for {1} speculative decoding, length of {2} (default: {3})"

SPEC_FLAGS: list[tuple[str, ...]] = [
    ("--spec-type", "spec_type", "list",
     "comma-separated types of speculative decoding: ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, draft-simple run here; "
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
    ("--spec-synth-len", "spec_synth_len", "float",
     "target mean synthetic acceptance length, including the target token (benchmarking only)",
     "LLAMA_ARG_SPEC_SYNTH_LEN"),
    ("--spec-synth-rates", "spec_synth_rates", "str",
     "comma-separated unconditional per-position synthetic acceptance probabilities (benchmarking only)",
     "LLAMA_ARG_SPEC_SYNTH_RATES"),
    ("--spec-ngram-simple-size-n", "spec_ngram_simple_size_n", "int", _NGRAM.format("N", "ngram-simple", "lookup n-gram", 12)),
    ("--spec-ngram-simple-size-m", "spec_ngram_simple_size_m", "int", _NGRAM.format("M", "ngram-simple", "draft m-gram", 48)),
    ("--spec-ngram-simple-min-hits", "spec_ngram_simple_min_hits", "int", "minimum hits for ngram-simple speculative decoding (default: 1)"),
    ("--spec-ngram-map-k-size-n", "spec_ngram_map_k_size_n", "int", _NGRAM.format("N", "ngram-map-k", "lookup n-gram", 12)),
    ("--spec-ngram-map-k-size-m", "spec_ngram_map_k_size_m", "int", _NGRAM.format("M", "ngram-map-k", "draft m-gram", 48)),
    ("--spec-ngram-map-k-min-hits", "spec_ngram_map_k_min_hits", "int", "minimum hits for ngram-map-k speculative decoding (default: 1)"),
    ("--spec-ngram-map-k4v-size-n", "spec_ngram_map_k4v_size_n", "int",
     _NGRAM.format("N", "ngram-map-k4v", "lookup n-gram", 12)),
    ("--spec-ngram-map-k4v-size-m", "spec_ngram_map_k4v_size_m", "int",
     _NGRAM.format("M", "ngram-map-k4v", "draft m-gram", 48)),
    ("--spec-ngram-map-k4v-min-hits", "spec_ngram_map_k4v_min_hits", "int",
     "minimum hits for ngram-map-k4v speculative decoding (default: 1)"),
    ("--spec-ngram-mod-n-min", "spec_ngram_mod_n_min", "int",
     "minimum number of ngram tokens to use for ngram-based speculative decoding (default: 48)"),
    ("--spec-ngram-mod-n-max", "spec_ngram_mod_n_max", "int",
     "maximum number of ngram tokens to use for ngram-based speculative decoding (default: 64)"),
    ("--spec-ngram-mod-n-match", "spec_ngram_mod_n_match", "int", "ngram-mod lookup length (default: 24)"),
    ("--spec-default", "spec_default", "flag",
     "enable default speculative decoding config (ngram-mod, n-match 24, n-min 48, n-max 64)"),
]


def add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding (llama.cpp's flags)")
    for names, dest, kind, help_text, *_ in SPEC_FLAGS:
        if kind == "list":
            g.add_argument(*names.split(), dest=dest, action="append", help=help_text)
        elif kind == "flag":
            g.add_argument(*names.split(), dest=dest, action="store_true", default=None, help=help_text)
        else:
            g.add_argument(*names.split(), dest=dest, type={"int": int, "float": float, "str": str}[kind],
                           help=help_text)


def speculative_settings(values: dict[str, Any]) -> tuple[SpecParams, list[str]]:
    """The server's default SpecParams from the flags, and the --spec-type names it cannot run.
    ValueError (one line) for a value llama.cpp would refuse."""
    from pyllama.ngram_mod import NgramModParams
    from pyllama.speculative import NgramParams, parse_types, synth_probs

    values = {k: v for k, v in values.items() if v is not None}  # argparse leaves None for a flag not given
    given = values.get("spec_type", [])
    types, unsupported = parse_types(",".join(given) if isinstance(given, list) else str(given))
    if values.get("spec_default") and "ngram-mod" not in types:
        types = (*types, "ngram-mod")  # llama.cpp's --spec-default; its sizes are ngram-mod's defaults
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
                      p_min=p_min, ngram_simple=ngram("simple"), ngram_map_k=ngram("map_k"), ngram_map_k4v=ngram("map_k4v"),
                      ngram_mod=NgramModParams(number("spec_ngram_mod_n_match", 24, 1),
                                               number("spec_ngram_mod_n_max", 64, 0), number("spec_ngram_mod_n_min", 48, 0)))
    synth_len = float(str(values["spec_synth_len"])) if "spec_synth_len" in values else None
    rates_text = str(values.get("spec_synth_rates", ""))
    try:
        rates = [float(r) for r in rates_text.split(",")] if rates_text.strip() else None
    except ValueError:
        raise ValueError(f"--spec-synth-rates: invalid value {rates_text!r}") from None
    if (synth_len is not None or rates) and not spec.enabled:
        raise ValueError("synthetic acceptance requires an initialized speculative decoding context (--spec-type or -md)")
    sizes = {"draft-simple": spec.n_max, "ngram-simple": spec.ngram_simple.size_m, "ngram-map-k": spec.ngram_map_k.size_m,
             "ngram-map-k4v": spec.ngram_map_k4v.size_m, "ngram-mod": spec.ngram_mod.n_max}
    spec.synth_probs = synth_probs(synth_len, rates, max((sizes[t] for t in spec.types), default=0))
    return spec, unsupported
