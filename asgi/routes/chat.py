"""OpenAI chat completions: /v1/chat/completions (and /chat/completions).

The messages go through the model's chat template (pyllama.chat) to become one prompt;
`response_format` and tools become a JSON-schema constraint; the rest of the body is
read like a /completion request, so llama.cpp extras such as `mirostat` work here too.
Replies come back as `message` (or streamed `delta` chunks), with tool calls parsed out
of the text in the format the template implies.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Response

from asgi.chat_reply import Delta, ReplyStream, whole_reply
from asgi.chat_request import read_chat, reply_message
from asgi.completion_request import verbose_body, wants_verbose
from asgi.errors import BadRequest
from asgi.generate import Tagged, run_all, sse_events, stream_all
from asgi.http import SSE_DONE, guarded, json_response, read_json, sse_event, sse_response
from asgi.registry import ServedModel
from asgi.responses import (
    chat_chunk,
    finish_reason,
    oai_chat,
    random_id,
    tool_call_delta,
    usage,
    usage_chunk,
)
from asgi.state import server_state

bp = Blueprint("chat", __name__)
log = logging.getLogger(__name__)


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
async def chat_completions() -> Response:
    body, _, run = await read_chat()
    served, prompt, params, tasks, model_name = run.served, run.prompt, run.params, run.tasks, run.model_name
    cmpl_id = random_id("chatcmpl-")
    for task in tasks:
        task.cmpl_id = cmpl_id  # POST /v1/chat/completions/control finds the running task by it

    if not params.stream:
        served.admit(len(tasks))
        finals = await guarded(run_all(served, tasks))
        choices = []
        for i, final in enumerate(finals):
            reply = whole_reply(prompt, run.reasoning_format, final.content)
            choice: dict[str, Any] = {
                "finish_reason": finish_reason(final, bool(reply.tool_calls)),
                "index": i,
                "message": reply_message(reply),
            }
            if final.probs:
                choice["logprobs"] = {"content": [p.to_json() for p in final.probs]}
            choices.append(choice)
        total = usage(sum(f.n_prompt for f in finals), sum(f.n_decoded for f in finals), sum(f.n_cached for f in finals))
        answer = oai_chat(cmpl_id, model_name, choices, total, finals[0].timings)
        if wants_verbose(body):
            answer["__verbose"] = verbose_body(served, params, finals[0], run.tokens)
        return json_response(answer)

    started = [False] * len(tasks)
    replies = [ReplyStream(prompt, run.reasoning_format) for _ in tasks]

    def delta_json(delta: Delta) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if delta.reasoning:
            out["reasoning_content"] = delta.reasoning
        if delta.content:
            out["content"] = delta.content
        return out

    verbose = wants_verbose(body)

    def render(item: Tagged) -> list[str]:
        from pyllama.tasks import Final

        i, event = item.index, item.event
        out: list[str] = []
        if getattr(event, "progress", None) is not None:  # return_progress: llama-server's progress chunk
            chunk = chat_chunk(cmpl_id, model_name, i, {"role": "assistant", "content": None})
            chunk["timings"], chunk["prompt_progress"] = event.timings, event.progress
            return [sse_event(chunk)]
        if not started[i]:
            started[i] = True
            out.append(sse_event(chat_chunk(cmpl_id, model_name, i, {"role": "assistant", "content": None})))
        if not isinstance(event, Final):
            delta = delta_json(replies[i].feed(event.text))
            if delta or event.probs:
                out.append(sse_event(chat_chunk(cmpl_id, model_name, i, delta or {"content": ""}, logprobs=event.probs)))
            return out
        last, reply = replies[i].finish(event.tail)
        chunks = []
        if delta_json(last):
            chunks.append(chat_chunk(cmpl_id, model_name, i, delta_json(last)))
        for n, call in enumerate(reply.tool_calls):
            chunks.append(chat_chunk(cmpl_id, model_name, i, tool_call_delta(n, call)))
        finish = chat_chunk(cmpl_id, model_name, i, {}, finish_reason(event, bool(reply.tool_calls)))
        if not params.include_usage:
            finish["timings"] = event.timings  # llama-server puts timings on the last chunk
        chunks.append(finish)
        if params.include_usage:
            chunks.append(usage_chunk(cmpl_id, model_name, usage(event.n_prompt, event.n_decoded, event.n_cached),
                                      event.timings))
        if verbose:  # llama-server: the native result on the first chunk of the final result
            chunks[0]["__verbose"] = verbose_body(served, params, event, run.tokens)
        return out + [sse_event(c) for c in chunks]

    served.admit(len(tasks))
    first, rest = await guarded(stream_all(served, tasks))
    return sse_response(sse_events(first, rest, render, SSE_DONE), SSE_DONE)


@bp.post("/v1/chat/completions/control")
async def chat_control() -> Response:
    """Act on a running chat completion by its `id` (llama-server's post_control): the only
    action is `reasoning_end`, for a request sent with `reasoning_control: true`. Sent while
    the client still reads the stream; see pyllama.control for the answers."""
    body = await read_json()
    cmpl_id, action = body.get("id"), body.get("action")
    if not isinstance(cmpl_id, str) or not cmpl_id:
        raise BadRequest("missing completion id")
    if action != "reasoning_end":
        raise BadRequest("unknown control action")
    served: ServedModel = server_state().registry.lookup(body.get("model"))  # never loads nor wakes a model
    if served.state != "ready" or served.worker is None or served.scheduler is None:
        return json_response({"success": False, "message": "no active completion for this id"})
    from pyllama.control import control_completion

    slots = served.scheduler.slots
    return json_response(await served.worker.call(lambda: control_completion(slots, cmpl_id, action)))
