"""Every sampling parameter, written down once: name, type, default, limits, flags, help.

Why a table: the same parameters reach the engine from six directions (`pyllama run`'s
flags, pyllama-server's flags and LLAMA_ARG_* variables, request bodies, /openapi.json,
the browser session, the web page's settings). Each of those is derived from FIELDS, so
a parameter added here is at once a flag of both programs, a validated request field
and a documented schema property; tests/sampling/test_fields.py fails if one of them
lists a parameter the table does not, or misses one it does.

Names are llama-server's request fields (`temperature`, not llama.cpp's internal
`temp`) and are SamplingParams' attribute names; flags are spelled as llama-server's
`--help` spells them (common/arg.cpp); defaults are common.h's common_params_sampling.
Limits follow server-schema.cpp: `clamp` moves an out-of-range request value into the
range (its set_limits), `limits` refuses it with a 400 that names the field (its
set_hard_limits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyllama.errors import InvalidRequestError
from pyllama.sampling.params import DEFAULT_SAMPLERS, SamplingParams, parse_samplers

INT_MAX = 2**31 - 1

# int, float, bool: one JSON value; seed: an int read as llama.cpp's uint32 (-1 = random);
# samplers: names or letters; strings: a non-empty list of strings; logit_bias: pairs
# that need the tokenizer, so the server reads them (asgi.sampler_fields), not this module.
KINDS = ("int", "float", "bool", "seed", "samplers", "strings", "logit_bias")
SCALAR_KINDS = ("int", "float", "bool", "seed")


@dataclass(frozen=True)
class Field:
    name: str  # request field and SamplingParams attribute
    kind: str  # one of KINDS
    default: Any  # llama.cpp common.h's value
    help: str  # one line, for --help and /openapi.json
    flags: tuple[str, ...] = ()  # llama-server's command-line names (none: request only)
    env: str | None = None  # llama-server's LLAMA_ARG_* variable
    aliases: tuple[str, ...] = ()  # other request names, read when `name` is absent
    clamp: tuple[float, float] | None = None  # soft range: values outside are moved in
    limits: tuple[float, float] | None = None  # hard range: values outside are a 400
    at_least: float | None = None  # smaller values leave the default in place (dry_base)

    @property
    def flag_help(self) -> str:
        """`help` with the default spelled out, as llama-server's --help prints it."""
        return f"{self.help} (default: {show_default(self)})"


def show_default(f: Field) -> str:
    if f.kind == "samplers":
        return ";".join(f.default)
    if f.kind == "strings":
        return ", ".join(repr(s) for s in f.default)
    if f.kind == "logit_bias":
        return "none"
    return str(f.default).lower() if f.kind == "bool" else str(f.default)


FIELDS: tuple[Field, ...] = (
    Field("temperature", "float", 0.8, "temperature (<= 0 = greedy)", ("--temp", "--temperature"),
          "LLAMA_ARG_TEMPERATURE", clamp=(0.0, math.inf)),
    Field("dynatemp_range", "float", 0.0, "dynamic temperature range (0.0 = disabled)", ("--dynatemp-range",)),
    Field("dynatemp_exponent", "float", 1.0, "dynamic temperature exponent", ("--dynatemp-exp",)),
    Field("top_k", "int", 40, "top-k sampling (0 = disabled)", ("--top-k",), "LLAMA_ARG_TOP_K",
          clamp=(0, INT_MAX)),
    Field("top_p", "float", 0.95, "top-p sampling (1.0 = disabled)", ("--top-p",), "LLAMA_ARG_TOP_P",
          clamp=(0.0, 1.0)),
    Field("min_p", "float", 0.05, "min-p sampling (0.0 = disabled)", ("--min-p",), "LLAMA_ARG_MIN_P",
          clamp=(0.0, 1.0)),
    Field("top_n_sigma", "float", -1.0, "top-n-sigma sampling (-1.0 = disabled)", ("--top-nsigma", "--top-n-sigma")),
    Field("xtc_probability", "float", 0.0, "XTC probability (0.0 = disabled)", ("--xtc-probability",),
          clamp=(0.0, 1.0)),
    Field("xtc_threshold", "float", 0.1, "XTC threshold (> 0.5 disables XTC)", ("--xtc-threshold",),
          clamp=(0.0, 1.0)),
    Field("typical_p", "float", 1.0, "locally typical sampling, parameter p (1.0 = disabled)",
          ("--typical", "--typical-p")),
    Field("repeat_last_n", "int", 64, "last n tokens considered for penalties (0 = disabled, -1 = context size)",
          ("--repeat-last-n",), limits=(-1, INT_MAX)),
    Field("repeat_penalty", "float", 1.0, "penalize repeated tokens (1.0 = disabled)", ("--repeat-penalty",),
          "LLAMA_ARG_REPEAT_PENALTY"),
    Field("presence_penalty", "float", 0.0, "repeat alpha presence penalty (0.0 = disabled)",
          ("--presence-penalty",), "LLAMA_ARG_PRESENCE_PENALTY"),
    Field("frequency_penalty", "float", 0.0, "repeat alpha frequency penalty (0.0 = disabled)",
          ("--frequency-penalty",), "LLAMA_ARG_FREQUENCY_PENALTY"),
    Field("dry_multiplier", "float", 0.0, "DRY sampling multiplier (0.0 = disabled)", ("--dry-multiplier",)),
    Field("dry_base", "float", 1.75, "DRY sampling base (values below 1.0 keep the default)", ("--dry-base",),
          at_least=1.0),
    Field("dry_allowed_length", "int", 2, "DRY: repetitions longer than this are penalized",
          ("--dry-allowed-length",), limits=(0, INT_MAX)),
    Field("dry_penalty_last_n", "int", 64, "DRY: last n tokens scanned for repetitions (0 = disabled, -1 = context size)",
          ("--dry-penalty-last-n",), limits=(-1, INT_MAX)),
    Field("dry_sequence_breakers", "strings", ("\n", ":", '"', "*"),
          "DRY sequence breakers (the flag is repeatable and replaces the defaults; 'none' = no breakers)",
          ("--dry-sequence-breaker",)),
    Field("mirostat", "int", 0, "Mirostat sampling (0 = disabled, 1 = Mirostat, 2 = Mirostat 2.0)",
          ("--mirostat",), clamp=(0, 2)),
    Field("mirostat_tau", "float", 5.0, "Mirostat target entropy, parameter tau", ("--mirostat-ent",)),
    Field("mirostat_eta", "float", 0.1, "Mirostat learning rate, parameter eta", ("--mirostat-lr",)),
    Field("adaptive_target", "float", -1.0, "adaptive-p: select tokens near this probability (negative = disabled)",
          ("--adaptive-target",), clamp=(-math.inf, 1.0)),
    Field("adaptive_decay", "float", 0.9, "adaptive-p: decay rate of the target adaptation (0.0 to 0.99)",
          ("--adaptive-decay",), limits=(0.0, 0.99)),
    Field("min_keep", "int", 0, "samplers keep at least this many tokens (0 = disabled)", ("--min-keep",),
          limits=(0, INT_MAX)),
    Field("n_probs", "int", 0, "return the probabilities of the top N tokens of each step", aliases=("logprobs",),
          clamp=(0, INT_MAX)),
    Field("seed", "seed", -1, "RNG seed (-1 = random)", ("-s", "--seed")),
    Field("ignore_eos", "bool", False, "ignore end-of-generation tokens and keep generating", ("--ignore-eos",)),
    Field("post_sampling_probs", "bool", False, "report probabilities after the sampler chain, not before"),
    Field("penalize_nl", "bool", True, "older llama-server field; false exempts newline from the penalties"),
    Field("samplers", "samplers", DEFAULT_SAMPLERS, "sampler order, names separated by ';'", ("--samplers",)),
    Field("logit_bias", "logit_bias", (), "add to a token's logit, e.g. 15043+1, or ban it: 15043-inf (repeatable)",
          ("-l", "--logit-bias")),
)  # fmt: skip

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# llama-server's second spelling of the sampler order: one letter per sampler.
SEQ_FLAGS = ("--sampling-seq", "--sampler-seq")
SEQ_HELP = "sampler order as letters, e.g. edskypmxt (the same setting as --samplers)"


def defaults() -> dict[str, Any]:
    """{name: default} with lists as lists (what a request may send back unchanged)."""
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in FIELDS}


# ---- reading request values ------------------------------------------------------------
_JSON_KIND = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def json_kind(value: Any) -> str:
    """The JSON type name of a parsed value, as llama-server's messages name it."""
    return "null" if value is None else _JSON_KIND.get(type(value), type(value).__name__)


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def read_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"Field '{name}': type must be number, but is {json_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequestError(f"Field '{name}': must be a finite number")
    return int(value)


def read_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"Field '{name}': type must be number, but is {json_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidRequestError(f"Field '{name}': must be a finite number")
    return result


def read_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"Field '{name}': type must be boolean, but is {json_kind(value)}")
    return value


def check_range(name: str, value: float, lo: float, hi: float = INT_MAX) -> None:
    if value < lo or value > hi:
        raise InvalidRequestError(f"Field '{name}': Value must be between {_shown(lo)} <= value <= {_shown(hi)}, "
                                  f"but got {value}")


def pick(body: Mapping[str, Any], *names: str) -> tuple[str, Any] | None:
    """The first of `names` present with a non-null value (aliases in priority order)."""
    for name in names:
        if body.get(name) is not None:
            return name, body[name]
    return None


def read_value(f: Field, name: str, raw: Any) -> Any:
    """One request value of field `f` (sent as `name`), checked and clamped; None: keep the default."""
    if f.kind == "bool":
        return read_bool(name, raw)
    if f.kind == "seed":
        seed = read_int(name, raw)
        return -1 if seed in (-1, 0xFFFFFFFF) else seed & 0xFFFFFFFF  # llama.cpp keeps a uint32
    if f.kind == "samplers":
        return parse_samplers(raw)
    if f.kind == "strings":
        if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
            raise InvalidRequestError(f"Field '{name}': must be a non-empty array of strings")
        return list(raw)
    number: float = read_int(name, raw) if f.kind == "int" else read_float(name, raw)
    if f.limits is not None:
        check_range(name, number, *f.limits)
    if f.clamp is not None:
        number = min(max(number, f.clamp[0]), f.clamp[1])
    if f.at_least is not None and number < f.at_least:
        return None
    return int(number) if f.kind == "int" else number


def apply_request(body: Mapping[str, Any], params: SamplingParams) -> None:
    """Set every table field `body` carries (null = absent) on `params`; InvalidRequestError
    names the field of a wrong type or out of its hard range. logit_bias is left to the caller
    (its string keys need the tokenizer and a size cap)."""
    for f in FIELDS:
        if f.kind == "logit_bias":
            continue
        found = pick(body, f.name, *f.aliases)
        if found is not None:
            value = read_value(f, *found)
            if value is not None:
                setattr(params, f.name, value)


# ---- reading flag values ---------------------------------------------------------------
def samplers_from_flag(text: str) -> list[str]:
    """--samplers: names separated by ';' (llama-server) or ',' (older pyllama run)."""
    return parse_samplers([part for part in re.split(r"[;,]", text) if part.strip()])


def breakers_from_flag(values: list[str]) -> list[str]:
    """--dry-sequence-breaker, repeated: replaces the default list; 'none' empties it."""
    out: list[str] = []
    for value in values:
        out = [] if value == "none" else [*out, value]
    return out


def logit_bias_from_flag(item: str) -> tuple[int, float]:
    """-l TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf; ValueError when it is neither."""
    m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(inf|[0-9.]+(?:[eE][+-]?\d+)?)\s*", item)
    if m is None:
        raise ValueError(f"--logit-bias {item!r}: expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043-inf")
    value = float("inf") if m[3] == "inf" else float(m[3])
    return int(m[1]), -value if m[2] == "-" else value


def flag_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed flag values (keyed by field name, plus `sampling_seq`) -> request-shaped values.

    Only flags that were given appear in the result; lists come out canonical (sampler
    names, (token, bias) pairs as [token, bias]), numbers checked and clamped as in a request.
    ValueError naming the flag on a bad value (InvalidRequestError for an unknown sampler).
    """
    out: dict[str, Any] = {}
    for f in FIELDS:
        if not f.flags or values.get(f.name) is None:
            continue
        raw = values[f.name]
        if f.kind == "samplers":
            out[f.name] = samplers_from_flag(raw)
        elif f.kind == "strings":
            out[f.name] = breakers_from_flag(list(raw))
        elif f.kind == "logit_bias":
            out[f.name] = [list(logit_bias_from_flag(item)) for item in raw]
        else:  # checked as a request's value would be, so a bad default fails at startup, not per request
            try:
                value = read_value(f, f.name, raw)
            except InvalidRequestError as exc:
                raise ValueError(f"{f.flags[-1]}: {str(exc).split(': ', 1)[-1]}") from None
            if value is not None:  # None: --dry-base below 1.0 keeps the default
                out[f.name] = value
    if values.get("sampling_seq") is not None and "samplers" not in out:
        out["samplers"] = parse_samplers(str(values["sampling_seq"]))
    return out
