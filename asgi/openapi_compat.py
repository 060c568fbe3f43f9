"""Request bodies of the other vendors' routes for /openapi.json (Anthropic Messages,
OpenAI Responses, the input-token counters), kept apart from asgi.openapi's OpenAI and
llama.cpp bodies. Only fields the routes check are documented with a type, so the
reliability tests can feed each one a wrong value and expect a 400.
"""

from __future__ import annotations

from typing import Any

TEXT_OR_BLOCKS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}


def _object(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def compat_bodies(chat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Bodies per Quart endpoint; `chat` is the /v1/chat/completions body schema."""
    anthropic_message = _object({"role": {"type": "string", "enum": ["user", "assistant"]},
                                 "content": TEXT_OR_BLOCKS}, ["role", "content"])
    messages = _object({
        "model": {"type": "string"},
        "messages": {"type": "array", "items": anthropic_message},
        "system": TEXT_OR_BLOCKS,
        "max_tokens": {"type": "integer", "minimum": -1},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "top_k": {"type": "integer"},
        "stream": {"type": "boolean"},
        "tools": {"type": "array", "items": _object({"name": {"type": "string"}, "description": {"type": "string"},
                                                     "input_schema": {"type": "object"}}, ["name"])},
        "tool_choice": {"type": "object"},
        "thinking": _object({"type": {"type": "string", "enum": ["enabled", "disabled"]},
                             "budget_tokens": {"type": "integer"}}),
        "chat_template_kwargs": {"type": "object"},
    }, ["messages"])
    count = {**messages, "properties": {k: v for k, v in messages["properties"].items() if k != "stream"}}
    responses = _object({
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"},
        "max_output_tokens": {"type": "integer", "minimum": -1},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "stream": {"type": "boolean"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "reasoning": _object({"effort": {"type": "string"}}),
        "return_progress": {"type": "boolean"},
        "timings_per_token": {"type": "boolean"},
    }, ["input"])
    responses_count = {**responses, "properties": {k: v for k, v in responses["properties"].items()
                                                   if k not in ("stream", "return_progress", "timings_per_token")}}
    return {
        "anthropic.messages": messages,
        "anthropic.count_tokens": count,
        "responses.responses": responses,
        "responses.responses_input_tokens": responses_count,
        "responses.chat_input_tokens": chat,
    }
