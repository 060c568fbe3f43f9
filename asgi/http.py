"""Request/response helpers shared by the routes: JSON bodies, JSON replies, SSE framing.

llama-server answers malformed JSON with a 500; here it is a 400 with the parser's
reason, because the mistake is the client's. SSE framing is llama-server's exactly:
`data: <json>\\n\\n` per event and `data: [DONE]\\n\\n` to close the OpenAI routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from quart import Response, current_app, request
from quart.wrappers.response import DataBody

from asgi.errors import BadRequest
from asgi.json_text import DUMP_CHUNK as DUMP_CHUNK  # re-exported: JSON text lives in asgi.json_text
from asgi.json_text import LARGE_BODY as LARGE_BODY
from asgi.json_text import STR_CHUNK as STR_CHUNK
from asgi.json_text import check_depth, parse_json
from asgi.json_text import dumps as dumps

T = TypeVar("T")

SEND_CHUNK = 1 << 20  # bytes of a large answer given to the server at a time (see SlicedBody)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_text_response(dumps(value), status, headers)


class SlicedBody(DataBody):
    """A large answer handed to the server SEND_CHUNK bytes at a time. Given whole, asyncio's
    transport (Python 3.11) keeps the unsent rest in one bytearray and moves it to the front
    after every send() the socket accepts: tens of megabytes moved hundreds of times, all
    on the event loop. In slices, Hypercorn waits for each to drain before the next."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._slices()

    async def _slices(self) -> AsyncIterator[bytes]:
        view = memoryview(self.data)[self.begin:self.end]
        for i in range(0, len(view), SEND_CHUNK):
            yield bytes(view[i:i + SEND_CHUNK])


def json_text_response(text: str | bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A reply whose JSON text is already made (large ones are dumped off the event loop)."""
    response = current_app.response_class(text, status=status, mimetype="application/json")
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    for key, val in (headers or {}).items():
        response.headers[key] = val
    if isinstance(response.response, DataBody) and len(response.response.data) > SEND_CHUNK:
        response.response = SlicedBody(response.response.data)
    return response


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
    if len(raw) < LARGE_BODY:
        body = parse_json(raw)
        check_depth(body)
        return body
    # tens of megabytes take a while to decode and parse: not on the event loop
    body = await asyncio.to_thread(parse_json, raw)
    await asyncio.to_thread(check_depth, body)
    return body


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
