"""Request/response helpers shared by the routes: JSON bodies, JSON replies, SSE framing.

llama-server answers malformed JSON with a 500; here it is a 400 with the parser's
reason, because the mistake is the client's. SSE framing is llama-server's exactly:
`data: <json>\\n\\n` per event and `data: [DONE]\\n\\n` to close the OpenAI routes.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from quart import Response, current_app, request

from asgi.errors import BadRequest
from pyllama.json_limits import MAX_JSON_DEPTH  # deeper bodies are refused (see json_limits)

T = TypeVar("T")

LARGE_BODY = 1 << 20  # bytes of JSON parsed on a worker thread rather than the event loop
DECODE_CHUNK = 1 << 22  # a large body is decoded from UTF-8 this many bytes at a time
DUMP_CHUNK = 256  # list items per json.dumps call (see dumps)
STR_CHUNK = 1 << 20  # characters of one long string per json.dumps call (/apply-template's 20 MB prompt: 0.3 s)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_text_response(dumps(value), status, headers)


def json_text_response(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A reply whose JSON text is already made (large ones are dumped off the event loop)."""
    response = current_app.response_class(text, status=status, mimetype="application/json")
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    for key, val in (headers or {}).items():
        response.headers[key] = val
    return response


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259); llama-server's parser refuses them too."""
    raise BadRequest(f"Invalid JSON in request body: {name} is not a JSON value")


async def read_json(*, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400 that says what is wrong."""
    body = await read_json_value(allow_empty={} if allow_empty else None)
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(body).__name__}")
    return body


async def read_json_value(*, allow_empty: Any = None) -> Any:
    """The request body as any JSON value (POST /lora-adapters takes an array); an empty
    body is `allow_empty` when that is not None, else a 400."""
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    if len(raw) < LARGE_BODY and not raw.strip():  # (a large blank body fails to parse below)
        if allow_empty is not None:
            return allow_empty
        raise BadRequest("request body is empty: expected a JSON object")
    try:
        if len(raw) < LARGE_BODY:
            body = json.loads(_decode(raw), parse_constant=_no_constants)
        else:  # tens of megabytes take a while to decode and parse: not on the event loop
            body = await asyncio.to_thread(lambda: json.loads(_decode(raw), parse_constant=_no_constants))
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON in request body: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise BadRequest(f"Invalid JSON in request body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BadRequest(f"Invalid JSON in request body: {exc}") from None
    depth = json_depth(body) if len(raw) < LARGE_BODY else await asyncio.to_thread(json_depth, body)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"Invalid JSON in request body: nested deeper than {MAX_JSON_DEPTH} levels")
    return body


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


def sse_event(data: Any) -> str:
    """One Server-Sent Event; a list becomes one event per item (format_oai_sse)."""
    if isinstance(data, list):
        return "".join(f"data: {dumps(item)}\n\n" for item in data)
    return f"data: {dumps(data)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


SHUTDOWN_MESSAGE = "server is shutting down: generation cancelled"


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await a generation as an in-flight request: a graceful shutdown waits for it, then
    cancels it, and the client gets a 503 instead of a dropped connection."""
    from asgi.state import ShuttingDown

    state = current_app.extensions["pyllama"]
    with state.tracked():
        try:
            return await awaitable
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not state.cancelling or task is None:
                raise
            task.uncancel()
            raise ShuttingDown(SHUTDOWN_MESSAGE) from None


def sse_response(events: AsyncIterator[str], done: str | None = None) -> Response:
    """Stream `events`; if a graceful shutdown cancels the stream, end it with an error
    event (and `done`, the OpenAI routes' [DONE]) so the client sees a well-formed end."""
    from asgi.disconnect import current_watch
    from asgi.state import ShuttingDown

    state = current_app.extensions["pyllama"]
    watch = current_watch()
    session = watch.session if watch is not None else None  # a resumable stream (asgi.streams)

    async def body() -> AsyncIterator[bytes]:
        with state.tracked():
            try:
                async for chunk in events:
                    data = chunk.encode("utf-8")
                    if session is not None:
                        session.append(data)
                    yield data
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not state.cancelling or task is None:
                    raise
                task.uncancel()
                ending = sse_event(ShuttingDown(SHUTDOWN_MESSAGE).to_json()) + (done or "")
                if session is not None:
                    session.append(ending.encode("utf-8"))
                yield ending.encode("utf-8")
            finally:
                if session is not None:
                    session.finalize()

    response = current_app.response_class(body(), status=200, mimetype="text/event-stream")
    response.timeout = None  # a long generation is not a stuck response
    for key, val in SSE_HEADERS.items():
        response.headers[key] = val
    return response


def named_event(name: str, data: dict[str, Any]) -> str:
    """An SSE event with a name (Anthropic's and the Responses API's streams)."""
    return f"event: {name}\ndata: {dumps(data)}\n\n"
