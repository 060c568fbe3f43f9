"""Anthropic Messages API: POST /v1/messages and /v1/messages/count_tokens.

The request is translated into an OpenAI chat request (asgi.anthropic_convert) and runs
through the same template, sampling and reply parsing as /v1/chat/completions. The
reply comes back as Anthropic content blocks, thinking first, then text, then tool_use
(llama-server's to_json_anthropic); streamed, as Anthropic's named SSE events:
message_start, content_block_start / _delta / _stop per block, message_delta with the
stop reason and usage, message_stop. No timings: Anthropic clients do not expect them.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response

from asgi.chat_reply import Reply, ReplyStream, whole_reply
from asgi.chat_request import count_chat_tokens, read_chat
from asgi.generate import Tagged, run_all, sse_events, stream_all
from asgi.http import guarded, json_response, named_event, sse_response
from asgi.responses import random_id

bp = Blueprint("anthropic", __name__)


def stop_reason(final: Any, has_tool_calls: bool) -> str:
    if final.stop_type in ("word", "eos"):
        return "tool_use" if has_tool_calls else "end_turn"
    return "max_tokens"


def _input(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def content_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.reasoning:
        blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": ""})
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)})
    return blocks


def _usage(final: Any) -> dict[str, int]:
    return {
        "cache_read_input_tokens": final.n_cached,
        "input_tokens": final.n_prompt - final.n_cached,
        "output_tokens": final.n_decoded,
    }


@bp.post("/v1/messages")
async def messages() -> Response:
    _, _, run = await read_chat("anthropic")
    msg_id = random_id("msg_")
    if not run.params.stream:
        run.served.admit(len(run.tasks))
        final = (await guarded(run_all(run.served, run.tasks)))[0]
        reply = whole_reply(run.prompt, run.reasoning_format, final.content)
        return json_response({
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": content_blocks(reply),
            "model": run.model_name,
            "stop_reason": stop_reason(final, bool(reply.tool_calls)),
            "stop_sequence": final.stopping_word or None,
            "usage": _usage(final),
        })

    stream = ReplyStream(run.prompt, run.reasoning_format)
    blocks: list[str] = []  # kind of each opened block, by index
    state = {"started": False, "open": -1}

    def open_block(kind: str, block: dict[str, Any], out: list[str]) -> int:
        close_open(out)
        blocks.append(kind)
        state["open"] = len(blocks) - 1
        out.append(named_event("content_block_start", {"type": "content_block_start", "index": state["open"],
                                                       "content_block": block}))
        return state["open"]

    def close_open(out: list[str]) -> None:
        index = state["open"]
        if index < 0:
            return
        if blocks[index] == "thinking":  # Anthropic requires a signature before a thinking block ends
            out.append(named_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "signature_delta", "signature": ""}}))
        out.append(named_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        state["open"] = -1

    def emit(reasoning: str, text: str, out: list[str]) -> None:
        if reasoning:
            index = state["open"] if state["open"] >= 0 and blocks[state["open"]] == "thinking" else \
                open_block("thinking", {"type": "thinking", "thinking": ""}, out)
            out.append(named_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "thinking_delta", "thinking": reasoning}}))
        if text:
            index = state["open"] if state["open"] >= 0 and blocks[state["open"]] == "text" else \
                open_block("text", {"type": "text", "text": ""}, out)
            out.append(named_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "text_delta", "text": text}}))

    def render(item: Tagged) -> list[str]:
        from pyllama.tasks import Final

        event = item.event
        out: list[str] = []
        if not state["started"]:
            state["started"] = True
            usage = {"cache_read_input_tokens": event.n_cached, "input_tokens": event.n_prompt - event.n_cached,
                     "output_tokens": 0}
            out.append(named_event("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "content": [], "model": run.model_name,
                "stop_reason": None, "stop_sequence": None, "usage": usage}}))
        if not isinstance(event, Final):
            delta = stream.feed(event.text)
            emit(delta.reasoning, delta.content, out)
            return out
        last, reply = stream.finish(event.tail)
        emit(last.reasoning, last.content, out)
        for call in reply.tool_calls:
            index = open_block("tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, out)
            out.append(named_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": call.arguments}}))
        close_open(out)
        out.append(named_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(event, bool(reply.tool_calls)),
                      "stop_sequence": event.stopping_word or None},
            "usage": {"output_tokens": event.n_decoded},
        }))
        out.append(named_event("message_stop", {"type": "message_stop"}))
        return out

    run.served.admit(len(run.tasks))
    first, rest = await guarded(stream_all(run.served, run.tasks))
    return sse_response(sse_events(first, rest, render, None))


@bp.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    """Tokens the request's prompt would take (max_tokens is not needed here)."""
    return json_response({"input_tokens": await count_chat_tokens("anthropic")})
