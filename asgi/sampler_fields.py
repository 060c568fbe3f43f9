"""Request fields whose cost per step grows with their size, capped before they are used.

The model thread runs every slot's samplers once per token, so one request's lists must
not make a step long for everyone: `samplers` is capped at MAX_SAMPLERS entries and
`dry_sequence_breakers` at MAX_DRY_BREAKERS strings (each then cut to 40 bytes and
de-duplicated, as llama.cpp's llama_sampler_init_dry does, in pyllama.sampling.dry).
`logit_bias` entries are capped by --max-logit-bias; their string keys are tokenized here,
which the routes run off the event loop for large bodies.
"""

from __future__ import annotations

import math
from typing import Any

from asgi.errors import BadRequest

MAX_SAMPLERS = 32  # llama.cpp has 11 distinct samplers; a longer chain only repeats them
MAX_BIAS_TOKENS = 16384  # (token, bias) pairs once logit_bias's string keys are tokenized
MAX_DRY_BREAKERS = 32  # llama.cpp's default list has 4 (newline, colon, double quote, asterisk)


def _kind(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "number", float: "number", str: "string",
                                         list: "array", dict: "object"}.get(type(value), type(value).__name__)


def check_sampler_lists(body: dict[str, Any]) -> None:
    """400 for a `samplers` chain or `dry_sequence_breakers` list over its cap."""
    samplers = body.get("samplers")
    if isinstance(samplers, str | list):
        n = len(samplers.split(";")) if isinstance(samplers, str) and ";" in samplers else len(samplers)
        if n > MAX_SAMPLERS:
            raise BadRequest(f"Field 'samplers': {n} samplers is over the server limit of {MAX_SAMPLERS}")
    breakers = body.get("dry_sequence_breakers")
    if isinstance(breakers, list) and len(breakers) > MAX_DRY_BREAKERS:
        raise BadRequest(f"Field 'dry_sequence_breakers': {len(breakers)} strings is over the server limit "
                         f"of {MAX_DRY_BREAKERS}")


def logit_bias_pairs(value: Any, n_vocab: int, tokenize: Any) -> list[tuple[int, float]]:
    """[[token, bias], ...] or {"token": bias}; a token may be a string; bias false bans it."""

    def bias_of(v: Any) -> float | None:
        if isinstance(v, bool):
            return -math.inf if v is False else None
        if isinstance(v, int | float):
            return float(v)
        return None

    out: list[tuple[int, float]] = []

    def add(token: Any, raw_bias: Any) -> None:
        bias = bias_of(raw_bias)
        if bias is None:
            return
        if isinstance(token, int) and not isinstance(token, bool):
            if 0 <= token < n_vocab:
                out.append((token, bias))
        elif isinstance(token, str):
            if token.lstrip("-").isdigit():
                tid = int(token)
                if 0 <= tid < n_vocab:
                    out.append((tid, bias))
            else:
                out.extend((t, bias) for t in tokenize(token))
                if len(out) > MAX_BIAS_TOKENS:
                    raise BadRequest(f"Field 'logit_bias': its string keys make more than {MAX_BIAS_TOKENS} token "
                                     "biases (server limit)")

    if isinstance(value, list):
        for item in value:
            if isinstance(item, list) and len(item) == 2:
                add(item[0], item[1])
    elif isinstance(value, dict):
        for key, raw in value.items():
            add(key, raw)
    else:
        raise BadRequest(f"Field 'logit_bias': must be an array of [token, bias] pairs or an object, not "
                         f"{_kind(value)}")
    return out
