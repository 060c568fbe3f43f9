"""The sampling table (pyllama/sampling/fields.py) against every place that lists sampling fields.

Each consumer must cover exactly the table's fields: `pyllama run`'s flags, the server's
flags and the defaults they set, /openapi.json, the server's request validator, the
browser session and the web page's generated module. A field added to one of them and
not to the table (or the other way round) fails here. The defaults are checked against
llama.cpp's, written out below from its source.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from asgi.errors import BadRequest
from asgi.flags import build_parser
from asgi.openapi import completion_fields
from asgi.params import RequestLimits, parse_completion_params
from asgi.settings import SettingsError, parse_settings
from pyllama.cli.sampling_args import add_sampling_args, params_from_args
from pyllama.errors import InvalidRequestError
from pyllama.sampling import SamplingParams
from pyllama.sampling.fields import FIELDS, SEQ_FLAGS, Field, defaults

REPO = Path(__file__).resolve().parents[2]
NAMES = {f.name for f in FIELDS}
FLAGGED = {f.name for f in FIELDS if f.flags}
# SamplingParams attributes that are not sampling parameters: the grammar constrains the
# output (its flags and fields have their own readers, asgi.params and pyllama.grammar), and
# the reasoning budget is built from the chat template's thinking tags (asgi/reasoning_budget.py).
# Any other attribute must be in the table.
GRAMMAR_ATTRS = {"grammar", "grammar_lazy", "grammar_trigger_words", "grammar_trigger_tokens",
                 "grammar_trigger_patterns", "reasoning_budget", "reasoning_control"}

# llama.cpp common/common.h, struct common_params_sampling, at the commit the project
# follows (0c1e57098, llama-cpp-python 0.3.36), by llama-server's request name. seed is
# LLAMA_DEFAULT_SEED (0xFFFFFFFF), which requests spell -1; post_sampling_probs is
# task_params' (tools/server/server-task.h); logit_bias is an empty vector.
LLAMA_CPP_DEFAULTS: dict[str, Any] = {
    "seed": -1, "n_probs": 0, "min_keep": 0, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
    "xtc_probability": 0.0, "xtc_threshold": 0.10, "typical_p": 1.0, "temperature": 0.80,
    "dynatemp_range": 0.0, "dynatemp_exponent": 1.0, "repeat_last_n": 64, "repeat_penalty": 1.0,
    "frequency_penalty": 0.0, "presence_penalty": 0.0, "dry_multiplier": 0.0, "dry_base": 1.75,
    "dry_allowed_length": 2, "dry_penalty_last_n": 64, "adaptive_target": -1.0, "adaptive_decay": 0.90,
    "mirostat": 0, "top_n_sigma": -1.0, "mirostat_tau": 5.0, "mirostat_eta": 0.10, "ignore_eos": False,
    "dry_sequence_breakers": ["\n", ":", '"', "*"],
    "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"],
    "post_sampling_probs": False, "logit_bias": [],
}  # fmt: skip
# Accepted for older clients, no longer in llama.cpp (pyllama's own default: true).
NOT_IN_LLAMA_CPP = {"penalize_nl"}


def test_defaults_are_llama_cpps() -> None:
    assert set(LLAMA_CPP_DEFAULTS) == NAMES - NOT_IN_LLAMA_CPP
    table = defaults()
    for name, value in LLAMA_CPP_DEFAULTS.items():
        assert table[name] == value, name


def test_sampling_params_defaults_are_the_tables() -> None:
    attrs = {f.name for f in dataclasses.fields(SamplingParams)} - GRAMMAR_ATTRS
    assert attrs == NAMES
    made = SamplingParams()
    for name, value in defaults().items():
        assert getattr(made, name) == value, name


def _cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_sampling_args(parser)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    """{dest: option strings} (a --x/--no-x toggle lists both)."""
    return {a.dest: tuple(a.option_strings) for a in parser._actions if a.option_strings}


def test_cli_flags_are_the_tables() -> None:
    options = _option_strings(_cli_parser())
    sampling = {dest for dest in options if dest not in ("help", "grammar", "grammar_file", "json_schema")}
    assert sampling == FLAGGED | {"sampling_seq"}
    for f in FIELDS:
        if f.flags:
            assert options[f.name] == f.flags, f.name
    assert options["sampling_seq"] == SEQ_FLAGS


def test_server_flags_are_the_tables() -> None:
    options = _option_strings(build_parser())
    attrs = {f.name for f in dataclasses.fields(SamplingParams)} - GRAMMAR_ATTRS
    assert {dest for dest in options if dest in attrs} == FLAGGED  # no sampling flag outside the table
    for f in FIELDS:
        if f.flags:
            assert options[f.name] == f.flags, f.name
    assert options["sampling_seq"] == SEQ_FLAGS


def _good(f: Field) -> tuple[Any, Any]:
    """(a valid non-default request value, what SamplingParams then holds)."""
    if f.kind == "bool":
        return (not f.default,) * 2
    if f.kind == "samplers":
        return ["top_k", "temperature"], ["top_k", "temperature"]
    if f.kind == "strings":
        return ["x"], ["x"]
    if f.kind == "logit_bias":
        return [[5, 1.5]], [(5, 1.5)]
    if f.at_least is not None:
        return (f.at_least + 1.0,) * 2
    if f.name in ("mirostat", "adaptive_decay"):  # small ranges
        return (1 if f.kind == "int" else 0.5,) * 2
    if f.kind == "float":
        return (0.25 if f.default != 0.25 else 0.5,) * 2
    return (3,) * 2


# the flag spelling of _good's value, for the flags that are not a plain number
_FLAG_VALUE = {"samplers": "top_k;temperature", "strings": "x", "logit_bias": "5+1.5"}


def _flag_argv() -> list[str]:
    """Every table flag, set to _good's value."""
    argv: list[str] = []
    for f in FIELDS:
        if f.flags:
            argv += [f.flags[-1]] if f.kind == "bool" else [f.flags[-1], _FLAG_VALUE.get(f.kind, str(_good(f)[0]))]
    return argv


def test_server_flags_set_every_tables_default(smollm2_path: Path) -> None:
    settings = parse_settings(["-m", str(smollm2_path), *_flag_argv()], {})
    assert set(settings.sampling) == FLAGGED
    params = parse_completion_params({}, defaults=settings.sampling, n_vocab=100, n_parallel=1, tokenize=lambda t: [])
    for f in FIELDS:
        if f.flags:
            assert getattr(params.sampling, f.name) == _good(f)[1], f.name


def test_cli_flags_set_every_field() -> None:
    params = params_from_args(_cli_parser().parse_args(_flag_argv()))
    for f in FIELDS:
        if f.flags:
            assert getattr(params, f.name) == _good(f)[1], f.name


def test_openapi_documents_exactly_the_table() -> None:
    props = completion_fields(RequestLimits())
    attrs = {f.name for f in dataclasses.fields(SamplingParams)} - GRAMMAR_ATTRS
    assert {name for name in props if name in attrs} == NAMES
    for f in FIELDS:
        for name in (f.name, *f.aliases):
            assert props[name]["description"] == f.help


def _server(body: dict[str, Any]) -> SamplingParams:
    return parse_completion_params(body, defaults={}, n_vocab=100, n_parallel=1, tokenize=lambda t: [7]).sampling


def _session() -> Any:
    spec = importlib.util.spec_from_file_location("pyllama_session", REPO / "web" / "pyllama_session.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pyllama_session", module)
    spec.loader.exec_module(module)
    return module.sampling_params


@pytest.mark.parametrize("reader", ["server", "session"])
def test_request_readers_read_every_field(reader: str) -> None:
    read = _server if reader == "server" else _session()
    for f in FIELDS:
        if f.kind == "logit_bias" and reader == "session":
            continue  # the browser session has no tokenizer-aware logit_bias (the page never sends one)
        value, held = _good(f)
        assert getattr(read({f.name: value}), f.name) == held, f.name
        wrong = 12345 if f.kind in ("bool", "strings") else "seven" if f.kind != "samplers" else 5
        with pytest.raises((BadRequest, InvalidRequestError)) as info:
            read({f.name: wrong})
        assert f.name in str(info.value), (f.name, str(info.value))


def test_hard_limits_name_the_field() -> None:
    for f in FIELDS:
        if f.limits is not None:
            with pytest.raises(BadRequest, match=f"Field '{f.name}': Value must be between"):
                _server({f.name: f.limits[0] - 1})


def test_web_module_is_up_to_date() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import web_sampling_fields
    finally:
        sys.path.remove(str(REPO / "tools"))
    assert (REPO / "web" / "sampling_fields.js").read_text() == web_sampling_fields.render(), \
        "run python tools/web_sampling_fields.py"


@pytest.mark.parametrize("argv", [["--adaptive-decay", "2"], ["--repeat-last-n", "-5"], ["--min-keep", "-1"]])
def test_bad_flag_values_fail_at_startup(smollm2_path: Path, argv: list[str]) -> None:
    """A default out of its hard range is refused once, naming the flag, not by every request."""
    with pytest.raises(SettingsError, match=f"^{argv[0]}: Value must be between"):
        parse_settings(["-m", str(smollm2_path), *argv], {})
    with pytest.raises(ValueError, match=f"^{argv[0]}: Value must be between"):
        params_from_args(_cli_parser().parse_args(argv))


def test_flag_values_are_clamped_like_requests(smollm2_path: Path) -> None:
    settings = parse_settings(["-m", str(smollm2_path), "--temp", "-1", "--mirostat", "7", "--dry-base", "0.5"], {})
    assert settings.sampling == {"temperature": 0.0, "mirostat": 2}  # --dry-base below 1 keeps the default
