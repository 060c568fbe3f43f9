"""A chat request made ready to generate: messages through the model's chat template,
`response_format` and tools turned into a grammar, the rest read as completion fields.

Shared by /v1/chat/completions and the chat-shaped routes that translate their bodies
into a chat request first (/v1/messages, /v1/responses, their token counts, /apply-template).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from quart import request

from asgi.chat_render import CHAT_SHAPES, check_last_message_fits, render_chat
from asgi.chat_reply import Reply, reasoning_format
from asgi.completion_request import make_tasks, read_params
from asgi.generate import claim_stream
from asgi.http import LARGE_BODY, read_json
from asgi.prep_process import prepare_in_child, reply_tokens
from asgi.prompts import tokenize_off_loop
from asgi.registry import ServedModel
from asgi.responses import chat_message
from asgi.state import server_state
from pyllama.chat import ChatPrompt

log = logging.getLogger(__name__)


def chat_prompt(served: ServedModel, body: dict[str, Any]) -> tuple[ChatPrompt, dict[str, Any]]:
    """Render the request's messages; return the prompt and the body for the completion fields."""
    assert served.template is not None
    settings = server_state().settings
    return render_chat(served.template, settings.reasoning, settings.chat_template_kwargs, body)


@dataclass
class ChatRun:
    """A chat request ready to generate: the served model, its prompt, tasks and names."""

    served: ServedModel
    prompt: ChatPrompt
    params: Any
    tasks: list[Any]
    model_name: str
    reasoning_format: str
    tokens: list[int]  # the prompt's tokens (for `__verbose`)


async def prepare_chat(body: dict[str, Any]) -> ChatRun:
    """Everything a chat-shaped route does before generating (shared with /v1/messages
    and /v1/responses, which translate their bodies into this one first)."""
    claim_stream(body)  # X-Conversation-Id: resumable from here on (asgi.streams)
    served = await server_state().registry.get(body.get("model"))
    size = request.content_length or 0  # a large chat is templated and read off the event loop
    if size >= LARGE_BODY:
        check_last_message_fits(served.check_text_fits, body.get("messages"))
    prompt, fields = await tokenize_off_loop(size, chat_prompt, served, body)
    fmt = reasoning_format(body, server_state().settings.reasoning.format)
    params = await tokenize_off_loop(size, read_params, served, fields)
    tok = served.tokenizer
    served.check_text_fits(prompt.prompt)
    tokens = await tokenize_off_loop(len(prompt.prompt), tok.tokenize, prompt.prompt, True, True)
    tasks = make_tasks(served, [tokens], params)
    model_name = body["model"] if isinstance(body.get("model"), str) else served.name
    return ChatRun(served, prompt, params, tasks, model_name, fmt, tokens)


async def read_chat(shape: str = "chat") -> tuple[dict[str, Any], dict[str, Any], ChatRun]:
    """A chat-shaped route's chat body, the fields its shape keeps aside (asgi.chat_render.
    CHAT_SHAPES: /v1/messages, /v1/responses translate their bodies first) and its run.
    A body of --prep-process-bytes or more is parsed, converted, templated and tokenized by
    the preparation process (asgi/prep_process.py), which sends back the chat body without
    its messages and tools, the prompt's tokens and the template's reply format; the steps
    after that are the same as in `prepare_chat`."""
    prepared = await prepare_in_child(shape)
    if prepared is None:
        body, aside = CHAT_SHAPES[shape](await read_json())
        return body, aside, await prepare_chat(body)
    reply, served = prepared
    body = reply.body
    claim_stream(body)
    fmt = reasoning_format(body, server_state().settings.reasoning.format)
    params = await tokenize_off_loop(request.content_length or 0, read_params, served, reply.fields)
    tokens = reply_tokens(reply)
    tasks = make_tasks(served, [tokens], params)
    model_name = body["model"] if isinstance(body.get("model"), str) else served.name
    return body, reply.aside, ChatRun(served, reply.prompt, params, tasks, model_name, fmt, tokens)


async def count_chat_tokens(shape: str) -> int:
    """How many tokens a chat-shaped body's prompt takes (the token-count routes; no context
    check, as llama-server), through the preparation process when the body is large."""
    prepared = await prepare_in_child(shape + "-count")
    if prepared is not None:
        return len(reply_tokens(prepared[0]))
    body, _ = CHAT_SHAPES[shape](await read_json())
    served = await server_state().registry.get(body.get("model"))
    prompt, _ = await tokenize_off_loop(request.content_length or 0, chat_prompt, served, body)
    tokens = await tokenize_off_loop(len(prompt.prompt), served.tokenizer.tokenize, prompt.prompt, True, True)
    return len(tokens)


def reply_message(reply: Reply) -> dict[str, Any]:
    message = chat_message(reply.content, reply.tool_calls)
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    return message
