"""JSON in and out of the server without Quart: what `asgi.http` and the preparation
process (`asgi.prep_child`) share, so that a body parsed or an answer encoded in either
place is the same text and the same errors.

llama-server answers malformed JSON with a 500; here it is a 400 with the parser's
reason, because the mistake is the client's.
"""

from __future__ import annotations

import codecs
import json
import math
from typing import Any

from asgi.errors import BadRequest
from pyllama.json_limits import MAX_JSON_DEPTH  # deeper bodies are refused (see json_limits)

LARGE_BODY = 1 << 20  # bytes of JSON parsed on a worker thread rather than the event loop
DECODE_CHUNK = 1 << 22  # a large body is decoded from UTF-8 this many bytes at a time
DUMP_CHUNK = 256  # list items per json.dumps call (see dumps)
STR_CHUNK = 1 << 20  # characters of one long string per json.dumps call (/apply-template's 20 MB prompt: 0.3 s)


def _clean(value: Any) -> Any:
    """JSON cannot carry NaN/inf; llama-server's dump_safe writes them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _dumps_plain(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON; a list longer than DUMP_CHUNK items is encoded DUMP_CHUNK at a time.

    json.dumps is one C call that holds the GIL from start to end: /tokenize's pieces for a
    few megabytes of text took 1.5 s, and /health, the event loop and the model thread all
    waited for it. Encoded in slices, other threads get their turn between two slices; the
    text is the same."""
    if isinstance(value, list) and len(value) > DUMP_CHUNK:
        parts = (dumps(value[i:i + DUMP_CHUNK])[1:-1] for i in range(0, len(value), DUMP_CHUNK))
        return "[" + ",".join(p for p in parts if p) + "]"
    if isinstance(value, str) and len(value) > STR_CHUNK:  # JSON escapes character by character
        return '"' + "".join(_dumps_plain(value[i:i + STR_CHUNK])[1:-1] for i in range(0, len(value), STR_CHUNK)) + '"'
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and any(
            (isinstance(v, list | dict) and len(v) > DUMP_CHUNK) or (isinstance(v, str) and len(v) > STR_CHUNK)
            for v in value.values()):
        return "{" + ",".join(f"{_dumps_plain(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    return _dumps_plain(value)


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259); llama-server's parser refuses them too."""
    raise BadRequest(f"Invalid JSON in request body: {name} is not a JSON value")


def _decode(raw: bytes) -> str:
    """UTF-8 text of a body, decoded DECODE_CHUNK bytes per call: one call over 60 MB holds
    the GIL for 0.2 s, long enough to delay /health for the other threads."""
    if len(raw) <= DECODE_CHUNK:
        return raw.decode("utf-8")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(raw)
    parts = [decoder.decode(view[i:i + DECODE_CHUNK]) for i in range(0, len(raw), DECODE_CHUNK)]
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (stops counting past the limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(raw: bytes) -> Any:
    """A body's JSON value, or a 400 that says what is wrong with it (blank bodies are the
    caller's business)."""
    try:
        body = json.loads(_decode(raw), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON in request body: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise BadRequest(f"Invalid JSON in request body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BadRequest(f"Invalid JSON in request body: {exc}") from None
    return body


def check_depth(body: Any) -> None:
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"Invalid JSON in request body: nested deeper than {MAX_JSON_DEPTH} levels")
