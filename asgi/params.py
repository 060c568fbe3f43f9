"""Completion request fields -> sampling parameters and task limits, checked in one place.

This follows llama-server's schema (server-schema.cpp) field by field: the same names
and aliases (`max_tokens` for `n_predict`, `n` for `n_cmpl`, `logprobs` for `n_probs`),
hard limits that reject (`n_predict` below -1) and soft limits that clamp (`top_p` into
[0, 1]), `null` meaning "use the default". A wrong type or value is a 400 that names the
field: "Field 'n_predict': Value must be between -1 <= value <= 2147483647, but got -5".
The sampling fields are read by pyllama.sampling.fields from its table (the browser
session reads them the same way); this module reads the rest: lengths, stops, grammar.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from asgi.errors import BadRequest
from asgi.lora_settings import lora_entries
from asgi.sampler_fields import check_sampler_lists, logit_bias_pairs
from pyllama.errors import InvalidRequestError
from pyllama.json_limits import loads_bounded
from pyllama.sampling import SamplingParams, fields
from pyllama.sampling.fields import INT_MAX


@dataclass(frozen=True)
class RequestLimits:
    """Per-request size limits (flags --max-*). llama-server has few of these; its C++ parser
    copes with anything, while pyllama's Python parsers (grammars, stop strings, logit bias)
    spend time in proportion to the input, so each has a generous cap that no real client hits."""

    n_probs: int = 100  # top-n probabilities per token (OpenAI allows 20)
    stop_count: int = 64  # stop strings per request (OpenAI allows 4)
    stop_length: int = 1024  # characters per stop string
    grammar_bytes: int = 256 << 10  # GBNF grammar, or JSON schema as JSON text
    logit_bias: int = 4096  # entries in logit_bias
    prompts: int = 1024  # prompts (or embedding inputs) per request
    predict: int = 16384  # tokens one task may generate (bounds n_predict -1 with ignore_eos or context shift)


def _checked(read: Any, *args: Any) -> Any:
    """A pyllama.sampling.fields reader, its InvalidRequestError as this module's BadRequest."""
    try:
        return read(*args)
    except InvalidRequestError as exc:
        raise BadRequest(str(exc)) from None


def _int(name: str, value: Any) -> int:
    return int(_checked(fields.read_int, name, value))


def _bool(name: str, value: Any) -> bool:
    return bool(_checked(fields.read_bool, name, value))


def _hard(name: str, value: int, lo: int, hi: int = INT_MAX) -> int:
    _checked(fields.check_range, name, value, lo, hi)
    return value


_pick = fields.pick
_kind = fields.json_kind


@dataclass
class CompletionParams:
    """Everything a completion request asks for besides its prompt."""

    sampling: SamplingParams
    n_predict: int = -1
    n_keep: int = 0
    n_discard: int = 0
    n_cmpl: int = 1
    n_indent: int = 0
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    cache_prompt: bool = True
    return_tokens: bool = False
    timings_per_token: bool = False
    return_progress: bool = False  # streamed prompt_progress events
    id_slot: int = -1
    response_fields: list[str] = field(default_factory=list)
    t_max_predict_ms: int = -1
    json_schema: Any = None  # kept for generation_settings
    speculative: Any = None  # pyllama.speculative.SpecParams (asgi.routes.completions.read_params sets it)
    lora: list[tuple[int, float]] | None = None  # the request's `lora` field (asgi.lora_settings)

    def generation_settings(self, n_ctx: int, model: str) -> dict[str, Any]:
        """llama-server's `generation_settings` (task_params::to_json)."""
        s = self.sampling
        return {
            "n_ctx": n_ctx,
            "model": model,
            "seed": s.seed if s.seed >= 0 else 0xFFFFFFFF,
            "temperature": s.temperature,
            "dynatemp_range": s.dynatemp_range,
            "dynatemp_exponent": s.dynatemp_exponent,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "top_n_sigma": s.top_n_sigma,
            "xtc_probability": s.xtc_probability,
            "xtc_threshold": s.xtc_threshold,
            "typical_p": s.typical_p,
            "repeat_last_n": s.repeat_last_n,
            "repeat_penalty": s.repeat_penalty,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "dry_multiplier": s.dry_multiplier,
            "dry_base": s.dry_base,
            "dry_allowed_length": s.dry_allowed_length,
            "dry_penalty_last_n": s.dry_penalty_last_n,
            "dry_sequence_breakers": list(s.dry_sequence_breakers),
            "mirostat": s.mirostat,
            "mirostat_tau": s.mirostat_tau,
            "mirostat_eta": s.mirostat_eta,
            "adaptive_target": s.adaptive_target,
            "adaptive_decay": s.adaptive_decay,
            "stop": list(self.stop),
            "max_tokens": self.n_predict,
            "n_predict": self.n_predict,
            "n_keep": self.n_keep,
            "n_discard": self.n_discard,
            "ignore_eos": s.ignore_eos,
            "stream": self.stream,
            "logit_bias": [{"bias": b, "token": t} for t, b in s.logit_bias],
            "n_probs": s.n_probs,
            "min_keep": s.min_keep,
            "grammar": s.grammar,
            "grammar_lazy": s.grammar_lazy,
            "grammar_triggers": [{"type": "word", "value": w} for w in s.grammar_trigger_words],
            "preserved_tokens": [],
            "chat_format": "Content-only",
            "samplers": list(s.samplers),
            **(self.speculative.to_json() if self.speculative is not None else {"speculative.types": "none"}),
            "timings_per_token": self.timings_per_token,
            "post_sampling_probs": s.post_sampling_probs,
            "lora": [{"id": i, "scale": x} for i, x in self.lora or []],
        }


# The fields parse_completion_params reads besides the sampling table (pyllama.sampling.fields),
# as JSON schema for /openapi.json (the openapi test checks each one is validated as declared).
_INT_MIN = {"n_predict": -1, "max_tokens": -1, "max_completion_tokens": -1, "n_keep": -1, "n_discard": 0,
            "n_indent": 0, "id_slot": -1, "t_max_predict_ms": -1, "n_cmpl": 1, "n": 1}
OTHER_FIELDS: dict[str, dict[str, Any]] = {
    **{name: {"type": "integer", "minimum": lo} for name, lo in _INT_MIN.items()},
    **{name: {"type": "boolean"} for name in ("stream", "cache_prompt", "return_tokens", "timings_per_token",
                                              "grammar_lazy", "return_progress")},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "response_fields": {"type": "array", "items": {"type": "string"}},
    "json_schema": {"anyOf": [{"type": "object"}, {"type": "boolean"}, {"type": "string"}]},
    "lora": {"type": "array", "description": "LoRA scales for this request: [{\"id\": int, \"scale\": number}]; "
             "adapters not listed get 0", "items": {"type": "object", "required": ["id"], "properties": {
                 "id": {"type": "integer", "minimum": 0}, "scale": {"type": "number"}}}},
}


def check_grammar(text: str) -> None:
    """Parse a GBNF grammar now so a bad one is a 400 before any work is queued."""
    from pyllama.grammar.parser import check_left_recursion, parse_grammar

    check_left_recursion(parse_grammar(text))


def schema_to_grammar(schema: Any) -> str:
    """A JSON schema as GBNF (pyllama.grammar's converter)."""
    try:
        from pyllama.grammar import json_schema_to_grammar
    except ImportError:
        raise BadRequest("JSON schema constraints are not available in this build yet") from None
    try:
        grammar: str = json_schema_to_grammar(schema)
    except InvalidRequestError as exc:
        raise BadRequest(f'"json_schema": {exc}') from None
    return grammar


def parse_completion_params(
    body: dict[str, Any],
    *,
    defaults: dict[str, Any],
    n_vocab: int,
    n_parallel: int,
    tokenize: Any,
    limits: RequestLimits | None = None,
) -> CompletionParams:
    """Read every llama-server completion field from `body` over the server `defaults`."""
    limits = limits or RequestLimits()
    _check_limits(body, limits)
    merged = {k: v for k, v in defaults.items() if k not in ("n_predict", "n_keep", "grammar", "json_schema")}
    sampling = SamplingParams()
    if "dry_sequence_breakers" in merged:  # the flag may empty the list ('none'); a request may not
        sampling.dry_sequence_breakers = list(merged.pop("dry_sequence_breakers"))
    _checked(fields.apply_request, merged, sampling)
    if "logit_bias" in merged:
        sampling.logit_bias = logit_bias_pairs(merged["logit_bias"], n_vocab, tokenize)
    _checked(fields.apply_request, body, sampling)  # every table field but logit_bias
    params = CompletionParams(sampling=sampling)
    params.n_predict = int(defaults.get("n_predict", -1))
    params.n_keep = int(defaults.get("n_keep", 0))
    params.cache_prompt = bool(defaults.get("cache_prompt", True))

    found = _pick(body, "n_predict", "max_completion_tokens", "max_tokens")
    if found is not None:
        n_predict = _hard(found[0], _int(*found), -1)
        # llama-server: the request's value wins over -n; -1 means "the server's -n"
        params.n_predict = n_predict if n_predict != -1 else int(defaults.get("n_predict", -1))
    for name, attr, lo in (("n_keep", "n_keep", -1), ("n_discard", "n_discard", 0), ("n_indent", "n_indent", 0),
                           ("id_slot", "id_slot", -1), ("t_max_predict_ms", "t_max_predict_ms", -1)):
        if body.get(name) is not None:
            setattr(params, attr, _hard(name, _int(name, body[name]), lo))
    found = _pick(body, "n_cmpl", "n")
    if found is not None:
        params.n_cmpl = _hard(found[0], _int(*found), 1, n_parallel)
    for name in ("stream", "cache_prompt", "return_tokens", "timings_per_token", "return_progress"):
        if body.get(name) is not None:
            setattr(params, name, _bool(name, body[name]))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is not None:
        params.include_usage = _bool("include_usage", options["include_usage"])

    if body.get("logit_bias") is not None:
        sampling.logit_bias = logit_bias_pairs(body["logit_bias"], n_vocab, tokenize)
    if body.get("response_fields") is not None:
        names = body["response_fields"]
        if not isinstance(names, list) or not all(isinstance(f, str) for f in names):
            raise BadRequest("Field 'response_fields': must be an array of strings")
        params.response_fields = list(names)

    stop = body.get("stop")
    if stop is None:
        params.stop = []
    elif isinstance(stop, str):
        params.stop = [stop] if stop else []
    elif isinstance(stop, list) and all(isinstance(w, str) for w in stop):
        params.stop = [w for w in stop if w]
    else:
        raise BadRequest("Field 'stop': must be a string or an array of strings")

    if body.get("lora") is not None:  # per-request LoRA scales (ids checked against the model later)
        params.lora = lora_entries(body["lora"], "Field 'lora'") or None
    _apply_grammar(body, defaults, sampling, params)
    if sampling.n_probs > limits.n_probs:
        raise BadRequest(f"Field 'n_probs': Value must be between 0 <= value <= {limits.n_probs}, "
                         f"but got {sampling.n_probs} (server limit --max-n-probs)")
    try:
        sampling.validate()
    except InvalidRequestError as exc:
        raise BadRequest(str(exc)) from None
    return params


def _size(name: str, n: int, limit: int, unit: str, flag: str) -> None:
    if n > limit:
        raise BadRequest(f"Field '{name}': {n} {unit} is over the server limit of {limit} ({flag})")


def check_prompt_count(prompt: Any, limits: RequestLimits, name: str = "prompt") -> None:
    """A list without token ids is several prompts (tokenize_prompts): cap how many."""
    if isinstance(prompt, list) and not any(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        _size(name, len(prompt), limits.prompts, "prompts", "--max-prompts")


def _check_limits(body: dict[str, Any], limits: RequestLimits) -> None:
    """Size limits, checked before any parsing whose cost grows with the input."""
    stop = body.get("stop")
    if isinstance(stop, list):
        _size("stop", len(stop), limits.stop_count, "stop strings", "--max-stop")
        stop_words = [w for w in stop if isinstance(w, str)]
    else:
        stop_words = [stop] if isinstance(stop, str) else []
    for word in stop_words:
        _size("stop", len(word), limits.stop_length, "characters in a stop string", "--max-stop-length")
    bias = body.get("logit_bias")
    if isinstance(bias, list | dict):
        _size("logit_bias", len(bias), limits.logit_bias, "entries", "--max-logit-bias")
    check_sampler_lists(body)
    grammar = body.get("grammar")
    if isinstance(grammar, str):
        _size("grammar", len(grammar.encode("utf-8", "replace")), limits.grammar_bytes, "bytes", "--max-grammar-size")
    schema = body.get("json_schema")
    if schema is not None:
        text = schema if isinstance(schema, str) else json.dumps(schema, default=str)
        _size("json_schema", len(text.encode("utf-8", "replace")), limits.grammar_bytes, "bytes",
              "--max-grammar-size")


def _apply_grammar(body: dict[str, Any], defaults: dict[str, Any], s: SamplingParams, p: CompletionParams) -> None:
    schema = body.get("json_schema")
    grammar = body.get("grammar")
    if schema is not None and grammar not in (None, ""):
        raise BadRequest("Cannot use both json_schema and grammar")
    if schema is None and grammar in (None, ""):
        schema = defaults.get("json_schema")
        grammar = defaults.get("grammar")
    if schema is not None:
        if isinstance(schema, str):
            try:
                schema = loads_bounded(schema, '"json_schema"')
            except json.JSONDecodeError as exc:
                raise BadRequest(f'"json_schema": not valid JSON ({exc.msg})') from None
        if not isinstance(schema, dict | bool):
            raise BadRequest('"json_schema": must be a JSON schema object')
        if schema == {}:
            schema = {"type": "object"}  # llama-server: an empty schema means any object
        p.json_schema = schema
        s.grammar = schema_to_grammar(schema)
    elif grammar not in (None, ""):
        if not isinstance(grammar, str):
            raise BadRequest(f"Field 'grammar': type must be string, but is {_kind(grammar)}")
        check_grammar(grammar)
        s.grammar = grammar
    if body.get("grammar_lazy") is not None:
        lazy = _bool("grammar_lazy", body["grammar_lazy"])  # checked even when there is no grammar
        if s.grammar:
            s.grammar_lazy = lazy


def copy_params(params: CompletionParams) -> CompletionParams:
    """An independent copy (n_cmpl > 1 runs the same request several times)."""
    return dataclasses.replace(params, sampling=dataclasses.replace(params.sampling))
