"""Nesting limits for JSON that arrives as text: checked before the text is parsed.

Python's json module, the schema converter and the chat templates recurse once per
nesting level, so `[[[[...]]]]` 100,000 deep would end in RecursionError. No real schema,
tool-call argument list or grammar comes near MAX_JSON_DEPTH levels, so deeper text is
refused with an InvalidRequestError (HTTP 400) that names the limit. The depth is counted
on the raw text with NumPy, linearly and without recursion, in chunks of bounded memory.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pyllama.errors import InvalidRequestError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in any JSON a client sends."""

_CHUNK = 1 << 20
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


def json_text_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` in JSON text, brackets inside strings not counted.

    Exact for valid JSON, a sensible count for invalid text (which json.loads then refuses)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return text.count("[") + text.count("{")  # cannot be deeper than this: skip the scan
    data = text.encode("utf-8", "surrogatepass")
    deepest = depth = 0
    inside = 0  # 1 while inside a string at the chunk boundary
    run = 0  # backslashes right before the chunk (an odd run escapes a quote)
    for start in range(0, len(data), _CHUNK):
        b = np.frombuffer(data, np.uint8, count=min(_CHUNK, len(data) - start), offset=start)
        pos = np.arange(len(b), dtype=np.int64)
        last = np.maximum.accumulate(np.where(b != _BACKSLASH, pos, -1))  # last non-backslash at or before i
        prev = np.concatenate((np.array([-1], np.int64), last[:-1]))
        before = pos - 1 - prev + np.where(prev == -1, run, 0)  # backslashes just before i
        quote = (b == _QUOTE) & (before % 2 == 0)
        parity = (np.cumsum(quote, dtype=np.int64) + inside) % 2
        outside = parity == 0  # a closing quote has parity 0 and is not a bracket: no harm
        steps = (outside & ((b == _OPEN[0]) | (b == _OPEN[1]))).astype(np.int64)
        steps -= outside & ((b == _CLOSE[0]) | (b == _CLOSE[1]))
        levels = depth + np.cumsum(steps)
        deepest = max(deepest, int(levels.max(initial=depth)))
        depth = int(levels[-1])
        inside = int(parity[-1])
        run = len(b) - 1 - int(last[-1]) if last[-1] >= 0 else run + len(b)
    return deepest


def check_json_depth(text: str, what: str) -> None:
    """Refuse `text` (the JSON in field `what`) when it nests deeper than MAX_JSON_DEPTH."""
    depth = json_text_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequestError(
            f"{what}: JSON nested {depth} levels deep; the limit is {MAX_JSON_DEPTH} levels (JSON nesting limit)"
        )


def loads_bounded(text: str, what: str) -> Any:
    """json.loads after the depth check; JSONDecodeError (a ValueError) passes through."""
    check_json_depth(text, what)
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after the check; kept so no RecursionError escapes
        raise InvalidRequestError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
