"""OpenAI Responses API: POST /v1/responses (and /responses), plus the token counters
/v1/responses/input_tokens and /v1/chat/completions/input_tokens that llama-server serves.

The request becomes a chat request (asgi.responses_convert) and runs the chat path. The
reply is a `response` object whose `output` holds a reasoning item (rs_...), a message
item (msg_...) and function_call items (fc_...), as llama-server's to_json_oaicompat_resp
writes them. Streamed, it is the Responses event sequence: response.created and
response.in_progress, output_item.added / content_part.added / output_text.delta (and
reasoning_text.delta, function_call_arguments.delta), then the .done events and
response.completed with usage. With `timings_per_token` the deltas carry `timings`;
with `return_progress` an in_progress event carries `prompt_progress`.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response

from asgi.chat_reply import Reply, ReplyStream, whole_reply
from asgi.chat_request import count_chat_tokens, read_chat
from asgi.generate import Tagged, run_all, sse_events, stream_all
from asgi.http import guarded, json_response, named_event, sse_response
from asgi.responses import random_id

bp = Blueprint("responses", __name__)


def _usage(final: Any) -> dict[str, Any]:
    return {
        "input_tokens": final.n_prompt,
        "output_tokens": final.n_decoded,
        "total_tokens": final.n_prompt + final.n_decoded,
        "input_tokens_details": {"cached_tokens": final.n_cached},
    }


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"text": text, "type": "reasoning_text"}] if text else []
    return {"id": item_id, "summary": [], "type": "reasoning", "content": content, "encrypted_content": "",
            "status": status}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    return {"content": [text_part(text)] if text is not None else [], "id": item_id, "role": "assistant",
            "status": status, "type": "message"}


def call_item(call: Any, status: str) -> dict[str, Any]:
    return {"id": "fc_" + call.id, "type": "function_call", "status": status, "arguments": call.arguments,
            "call_id": "call_" + call.id, "name": call.name}


def output_items(reply: Reply, ids: dict[str, str]) -> list[dict[str, Any]]:
    output = []
    if reply.reasoning:
        output.append(reasoning_item(ids["rs"], reply.reasoning, "completed"))
    if reply.content:
        output.append(message_item(ids["msg"], reply.content, "completed"))
    output.extend(call_item(call, "completed") for call in reply.tool_calls)
    return output


def response_object(resp_id: str, model: str, status: str, output: list[Any] | None = None,
                    usage: dict[str, Any] | None = None) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"id": resp_id, "object": "response", "created_at": now, "status": status, "model": model,
                            "output": output or []}
    if status == "completed":
        body["completed_at"] = now
    if usage is not None:
        body["usage"] = usage
    return body


class EventWriter:
    """Numbers the events (sequence_number) and frames them as named SSE events."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, data: dict[str, Any]) -> str:
        data["sequence_number"] = self.sequence
        self.sequence += 1
        return named_event(str(data["type"]), data)


@bp.post("/v1/responses")
@bp.post("/responses")
async def responses() -> Response:
    _, aside, run = await read_chat("responses")
    return_progress = aside["return_progress"]
    resp_id = random_id("resp_")
    ids = {"rs": random_id("rs_"), "msg": random_id("msg_")}
    if not run.params.stream:
        run.served.admit(len(run.tasks))
        final = (await guarded(run_all(run.served, run.tasks)))[0]
        reply = whole_reply(run.prompt, run.reasoning_format, final.content)
        return json_response(response_object(resp_id, run.model_name, "completed", output_items(reply, ids),
                                             _usage(final)))

    stream = ReplyStream(run.prompt, run.reasoning_format)
    write = EventWriter()
    opened: list[str] = []  # "rs" / "msg", in output order
    timings_per_token = bool(run.params.timings_per_token)
    state = {"started": False}

    def open_item(kind: str, out: list[str]) -> None:
        opened.append(kind)
        index = len(opened) - 1
        if kind == "rs":
            item = reasoning_item(ids["rs"], "", "in_progress")
            out.append(write({"type": "response.output_item.added", "output_index": index, "item": item}))
            return
        out.append(write({"type": "response.output_item.added", "output_index": index,
                          "item": message_item(ids["msg"], None, "in_progress")}))
        out.append(write({"type": "response.content_part.added", "item_id": ids["msg"], "output_index": index,
                          "content_index": 0, "part": text_part("")}))

    def emit(reasoning: str, text: str, event: Any, out: list[str]) -> None:
        if reasoning:
            if "rs" not in opened:
                open_item("rs", out)
            out.append(write({"type": "response.reasoning_text.delta", "item_id": ids["rs"],
                              "output_index": opened.index("rs"), "content_index": 0, "delta": reasoning}))
        if text:
            if "msg" not in opened:
                open_item("msg", out)
            delta: dict[str, Any] = {"type": "response.output_text.delta", "item_id": ids["msg"],
                                     "output_index": opened.index("msg"), "content_index": 0, "delta": text,
                                     "logprobs": []}
            if timings_per_token:
                delta["timings"] = event.timings
            out.append(write(delta))

    def render(item: Tagged) -> list[str]:
        from pyllama.tasks import Final

        event = item.event
        out: list[str] = []
        if not state["started"]:
            state["started"] = True
            out.append(write({"type": "response.created",
                              "response": response_object(resp_id, run.model_name, "in_progress")}))
            progress: dict[str, Any] = {"type": "response.in_progress",
                                        "response": response_object(resp_id, run.model_name, "in_progress")}
            if return_progress:  # the prompt is processed by the time the first text arrives
                progress["prompt_progress"] = {"total": event.n_prompt, "cache": event.n_cached,
                                               "processed": event.n_prompt, "time_ms": event.prompt_ms}
            out.append(write(progress))
        if not isinstance(event, Final):
            delta = stream.feed(event.text)
            emit(delta.reasoning, delta.content, event, out)
            return out
        last, reply = stream.finish(event.tail)
        emit(last.reasoning, last.content, event, out)
        output: list[dict[str, Any]] = []
        if reply.reasoning:
            done = reasoning_item(ids["rs"], reply.reasoning, "completed")
            out.append(write({"type": "response.output_item.done", "output_index": len(output), "item": done}))
            output.append(done)
        if reply.content:
            if "msg" not in opened:
                open_item("msg", out)
            index = len(output)
            out.append(write({"type": "response.output_text.done", "item_id": ids["msg"], "output_index": index,
                              "content_index": 0, "text": reply.content, "logprobs": []}))
            out.append(write({"type": "response.content_part.done", "item_id": ids["msg"], "output_index": index,
                              "content_index": 0, "part": text_part(reply.content)}))
            done = message_item(ids["msg"], reply.content, "completed")
            out.append(write({"type": "response.output_item.done", "output_index": index, "item": done}))
            output.append(done)
        for call in reply.tool_calls:
            index = len(output)
            out.append(write({"type": "response.output_item.added", "output_index": index,
                              "item": {**call_item(call, "in_progress"), "arguments": ""}}))
            out.append(write({"type": "response.function_call_arguments.delta", "item_id": "fc_" + call.id,
                              "output_index": index, "delta": call.arguments}))
            out.append(write({"type": "response.function_call_arguments.done", "item_id": "fc_" + call.id,
                              "output_index": index, "arguments": call.arguments}))
            done = call_item(call, "completed")
            out.append(write({"type": "response.output_item.done", "output_index": index, "item": done}))
            output.append(done)
        completed = {"type": "response.completed",
                     "response": response_object(resp_id, run.model_name, "completed", output, _usage(event)),
                     "timings": event.timings}
        out.append(write(completed))
        return out

    run.served.admit(len(run.tasks))
    first, rest = await guarded(stream_all(run.served, run.tasks))
    return sse_response(sse_events(first, rest, render, None))


async def _count(shape: str) -> Response:
    return json_response({"input_tokens": await count_chat_tokens(shape), "object": "response.input_tokens"})


@bp.post("/v1/responses/input_tokens")
@bp.post("/responses/input_tokens")
async def responses_input_tokens() -> Response:
    return await _count("responses")


@bp.post("/v1/chat/completions/input_tokens")
@bp.post("/chat/completions/input_tokens")
async def chat_input_tokens() -> Response:
    return await _count("chat")
