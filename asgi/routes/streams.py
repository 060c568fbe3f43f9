"""Resumable streams: GET and DELETE /v1/stream, POST /v1/streams/lookup (asgi.streams).

The conversation id travels in the `conv_id` query parameter, as in llama-server: it may
hold a model name with slashes (`conv::org/model`), which a path parameter would split.
Answers, messages and status codes are llama-server's (server-stream.cpp).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from quart import Blueprint, Response, current_app, request

from asgi.errors import BadRequest, NotFound, Unavailable
from asgi.http import SSE_HEADERS, json_response
from asgi.state import server_state
from asgi.streams import OffsetLost, StreamSession

bp = Blueprint("streams", __name__)


def _conv_id() -> str:
    conv_id = request.args.get("conv_id", "")
    if not conv_id:
        raise BadRequest("Missing conversation id in path")
    return conv_id


def _offset() -> int:
    raw = request.args.get("from", "")
    if not raw:
        return 0
    # std::stoull: leading digits (after optional whitespace) make the number
    digits = raw.lstrip()
    end = 0
    while end < len(digits) and digits[end].isascii() and digits[end].isdigit():
        end += 1
    if end == 0 or end > 20:
        raise BadRequest("Invalid 'from' offset")
    return int(digits[:end])


@bp.get("/v1/stream")
async def stream_get() -> Response:
    """Replay the session's bytes from `from`, then follow it live until it ends."""
    conv_id = _conv_id()
    session = server_state().streams.get(conv_id)
    if session is None:
        raise NotFound("Stream not found or expired")
    if not session.started:  # its request still waits for the model (llama-server's router: 503)
        raise Unavailable("Stream owner model is loading, retry later")
    offset = _offset()
    if offset < session.dropped:
        raise BadRequest("Stream offset lost, please restart")

    async def body(s: StreamSession) -> AsyncIterator[bytes]:
        s.attach()
        try:
            async for chunk in s.read_from(offset):
                yield chunk
        except OffsetLost:
            return  # the reader fell more than the cap behind: the client restarts
        finally:
            s.detach()

    response = current_app.response_class(body(session), status=200, mimetype="text/event-stream")
    response.timeout = None
    for key, val in SSE_HEADERS.items():
        response.headers[key] = val
    return response


@bp.delete("/v1/stream")
async def stream_delete() -> Response:
    """The explicit Stop: cancel the generation and forget the session (204 even if gone)."""
    server_state().streams.evict_and_cancel(_conv_id())
    response = current_app.response_class("", status=204)
    response.headers["Content-Type"] = "application/json"
    return response


@bp.post("/v1/streams/lookup")
async def streams_lookup() -> Response:
    """The sessions of the ids the client names (never a list of everyone's sessions)."""
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid body: {exc}") from None
    ids: list[str] = []
    if isinstance(body, dict) and isinstance(body.get("conversation_ids"), list):
        ids = [v for v in body["conversation_ids"] if isinstance(v, str) and v]
    found = server_state().streams.lookup(ids) if ids else []
    return json_response([s.to_json() for s in found])
