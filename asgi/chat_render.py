"""A chat body rendered through a chat template: the prompt, and the completion fields
the rest of the body means (`response_format` and tools turned into a grammar).

Free of Quart and of the loaded model, so that the preparation process (asgi.prep_child)
renders a large chat exactly as the server does in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgi.anthropic_convert import anthropic_to_chat
from asgi.errors import BadRequest
from asgi.json_text import LARGE_BODY
from asgi.params import schema_to_grammar
from asgi.reasoning_budget import chat_budget_fields, reasoning_control
from asgi.responses_convert import responses_to_chat
from pyllama.chat import ChatInputs, ChatPrompt, ChatTemplate, parse_messages, parse_tools, reasoning
from pyllama.chat.reasoning import ReasoningConfig

log = logging.getLogger("asgi.chat_request")


def _response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    schema = body.get("json_schema")
    fmt = body.get("response_format")
    if fmt is None:
        return schema if isinstance(schema, dict) else None
    if not isinstance(fmt, dict):
        raise BadRequest('"response_format" must be an object')
    kind = fmt.get("type", "")
    if kind == "json_object":
        schema = fmt.get("schema", schema if schema is not None else {})
    elif kind == "json_schema":
        wrapper = fmt.get("json_schema", {})
        schema = wrapper.get("schema", {}) if isinstance(wrapper, dict) else {}
    elif kind not in ("", "text"):
        raise BadRequest(f'response_format type must be one of "text" or "json_object", but got: {kind}')
    if isinstance(schema, dict) and not schema:
        schema = {"type": "object"}
    if schema is not None and not isinstance(schema, dict):
        raise BadRequest('"json_schema" must be a JSON schema object')
    return schema


def render_chat(template: ChatTemplate, config: ReasoningConfig, default_kwargs: dict[str, Any],
                body: dict[str, Any]) -> tuple[ChatPrompt, dict[str, Any]]:
    """Render the request's messages with `template` (given the server's --reasoning config
    and --chat-template-kwargs); return the prompt and the body for the completion fields."""
    messages = parse_messages(body.get("messages"))
    tools = parse_tools(body.get("tools"))
    tool_choice = body.get("tool_choice")
    if tool_choice is None:  # absent or null: llama-server's default
        tool_choice = "auto"
    if isinstance(tool_choice, dict):  # {"type": "function", "function": {"name": ...}}: call that one
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        tools = [t for t in tools if t["function"]["name"] == name]
        if not tools:
            raise BadRequest(f'"tool_choice" names a function that is not in "tools": {name!r}')
        tool_choice = "required"
    if tool_choice not in ("auto", "none", "required"):
        raise BadRequest('"tool_choice" must be "auto", "none", "required" or a function object')
    schema = _response_schema(body)
    if schema is not None and body.get("grammar"):
        raise BadRequest("Cannot use both json_schema and grammar")
    if tools and tool_choice != "none" and body.get("grammar"):
        raise BadRequest("Cannot use custom grammar constraints with tools.")
    kwargs = body.get("chat_template_kwargs", {})
    if not isinstance(kwargs, dict):
        raise BadRequest('"chat_template_kwargs" must be an object')
    kwargs = {**default_kwargs, **kwargs}
    thinking = reasoning.enable_thinking(config, template.thinking is not None, body, kwargs)
    add_generation_prompt = body.get("add_generation_prompt", True)
    if not isinstance(add_generation_prompt, bool):
        raise BadRequest("Field 'add_generation_prompt': type must be boolean")
    # continue_final_message (vLLM/transformers): continue the trailing assistant message,
    # the same prompt as llama-server's automatic assistant prefill
    cont = body.get("continue_final_message")
    if cont is True or cont in ("content", "reasoning_content"):
        if add_generation_prompt:
            raise BadRequest("Cannot set both add_generation_prompt and continue_final_message to true.")
        if messages and messages[-1].role == "assistant":
            add_generation_prompt = True  # pyllama.chat continues a trailing assistant message on this path
    parallel = body.get("parallel_tool_calls", False)
    inputs = ChatInputs(
        messages=messages, tools=tools, tool_choice=tool_choice, parallel_tool_calls=bool(parallel),
        add_generation_prompt=add_generation_prompt, response_schema=schema, kwargs=dict(kwargs),
        enable_thinking=thinking,
    )
    prompt = template.apply(inputs)
    fields = {k: v for k, v in body.items() if k not in ("json_schema", "response_format", "prompt", "reasoning_format")}
    if body.get("logprobs") is not None:
        if not isinstance(body["logprobs"], bool):
            raise BadRequest("Field 'logprobs': type must be boolean")
        fields.pop("logprobs")
        if body["logprobs"]:
            fields["n_probs"] = body.get("top_logprobs") if body.get("top_logprobs") is not None else 20
        elif body.get("top_logprobs") is not None:
            raise BadRequest("top_logprobs requires logprobs to be set to true")
    elif body.get("top_logprobs") is not None:
        raise BadRequest("top_logprobs requires logprobs to be set to true")
    reasoning_control(body)  # a 400 when not a boolean; armed below only where the template has thinking tags
    fields.pop("reasoning_control", None)
    if thinking and prompt.thinking_tags is not None:  # the reasoning budget's fields (llama-server's)
        fields.update(chat_budget_fields(body, config, prompt.thinking_tags, prompt.generation_prompt))
    if prompt.schema is not None:
        try:
            fields["grammar"] = schema_to_grammar(prompt.schema)
        except BadRequest:
            if not prompt.parse_tool_calls:
                raise
            log.warning("no JSON-schema grammar available: tool calls run unconstrained")
            fields.pop("grammar", None)
    return prompt, fields


def check_last_message_fits(check: Callable[[str], None], messages: Any) -> None:
    """A last message whose text alone cannot fit the context is refused before the
    template runs: rendering tens of megabytes only to refuse them held the GIL for 0.5 s
    (every template renders the message it is asked to answer; the full prompt is checked
    again after rendering)."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return
    content = messages[-1].get("content")
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        content = "".join(texts) if sum(map(len, texts)) >= LARGE_BODY else None
    if isinstance(content, str):
        check(content)


def template_for(source: str | None, metadata: dict[str, Any], tokenizer: Any, override: str | None) -> ChatTemplate:
    """The chat template as llama-server resolves it (the GGUF's, or --chat-template's), with
    the model's BOS/EOS text: the server and the preparation process build it alike."""

    def piece(token_id: int | None) -> str:
        if token_id is None or token_id < 0:
            return ""
        text: str = tokenizer.token_to_piece(token_id, True).decode("utf-8", errors="replace")
        return text

    return ChatTemplate.resolve(
        source,
        override,
        bos_token=piece(tokenizer.bos_id),
        eos_token=piece(tokenizer.eos_id),
        add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
    )


def _responses_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    chat = responses_to_chat(body)
    return_progress = chat.pop("return_progress", False)  # the route's own event, not the completion's
    if not isinstance(return_progress, bool):
        raise BadRequest("Field 'return_progress': type must be boolean")
    return chat, {"return_progress": return_progress}


# The chat request each chat-shaped route's body stands for, and the fields the route
# keeps aside for itself: /v1/chat/completions (as is), /v1/messages, /v1/responses.
CHAT_SHAPES: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]] = {
    "chat": lambda body: (body, {}),
    "anthropic": lambda body: (anthropic_to_chat(body), {}),
    "responses": _responses_chat,
}
