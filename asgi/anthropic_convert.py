"""Anthropic Messages requests turned into OpenAI chat requests (llama-server's
server_chat_convert_anthropic_to_oai, field for field).

`system` becomes a system message; content blocks become text parts, `tool_use` blocks
become the assistant's `tool_calls`, `tool_result` blocks become `tool` messages after
the turn that holds them, `thinking` blocks become `reasoning_content`; tools take their
`input_schema` as `parameters`. The rest of the request (stop_sequences, max_tokens,
thinking, metadata, temperature...) maps onto the chat request's fields, so the reply
comes from the same template, sampling and parsing as /v1/chat/completions.
"""

from __future__ import annotations

import json
from typing import Any

from asgi.errors import BadRequest

BILLING_HEADER = "x-anthropic-billing-header:"


def _normalize_billing_header(text: str) -> str:
    """Claude Code stamps its system prompt with a changing `cch=xxxxx;`: make it constant
    so the prompt cache still reaches past it (llama.cpp PR 21793)."""
    if not text.startswith(BILLING_HEADER):
        return text
    at = text.find("cch=", len(BILLING_HEADER))
    if at < 0:
        return text
    start = at + 4
    if start + 5 < len(text) and text[start + 5] == ";":
        return text[:start] + "fffff" + text[start + 5:]
    return text


def _image_part(source: Any) -> dict[str, Any] | None:
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type", "image/jpeg")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source.get('data', '')}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
    return None


def _str(block: dict[str, Any], key: str) -> str:
    value = block.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f"content block field '{key}' must be a string")
    return value


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    tool_use_id = _str(block, "tool_use_id")
    content = block.get("content")
    if isinstance(content, str):
        return {"role": "tool", "tool_call_id": tool_use_id, "content": content}
    if isinstance(content, list):
        text = ""
        parts: list[dict[str, Any]] = []
        has_images = False
        for item in content:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "text":
                piece = _str(item, "text")
                text += piece
                parts.append({"type": "text", "text": piece})
            elif item.get("type") == "image":
                has_images = True
                image = _image_part(item.get("source"))
                if image is not None:
                    parts.append(image)
        return {"role": "tool", "tool_call_id": tool_use_id, "content": parts if has_images else text}
    return {"role": "tool", "tool_call_id": tool_use_id, "content": ""}


def _convert_message(msg: Any) -> list[Any]:
    if not isinstance(msg, dict):
        raise BadRequest("each message must be an object")
    role = msg.get("role", "")
    if "content" not in msg:
        return [] if role == "assistant" else [msg]
    content = msg["content"]
    if not isinstance(content, list):
        return [msg]
    tool_calls: list[dict[str, Any]] = []
    converted: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] = []
    reasoning = ""
    for block in content:
        if not isinstance(block, dict):
            raise BadRequest("each content block must be an object with a 'type'")
        kind = block.get("type")
        if kind == "text":
            converted.append(block)
        elif kind == "thinking":
            reasoning += _str(block, "thinking")
        elif kind == "image":
            image = _image_part(block.get("source"))
            if image is not None:
                converted.append(image)
        elif kind == "tool_use":
            arguments = block.get("input", {})
            tool_calls.append({
                "id": _str(block, "id"),
                "type": "function",
                "function": {"name": _str(block, "name"), "arguments": json.dumps(arguments, ensure_ascii=False)},
            })
        elif kind == "tool_result":
            tool_results.append(_tool_result(block))
    out: list[Any] = []
    if converted or tool_calls or reasoning:
        new: dict[str, Any] = {"role": role}
        new["content"] = converted if converted else ""
        if tool_calls:
            new["tool_calls"] = tool_calls
        if reasoning:
            new["reasoning_content"] = reasoning
        out.append(new)
    return out + tool_results


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return _normalize_billing_header(system)
    if isinstance(system, list):
        return "".join(
            _normalize_billing_header(block.get("text", "")) for block in system
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text", ""), str)
        )
    raise BadRequest("'system' must be a string or an array of text blocks")


def anthropic_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request an Anthropic Messages request stands for."""
    messages: list[Any] = []
    if body.get("system") is not None:
        messages.append({"role": "system", "content": _system_text(body["system"])})
    if "messages" not in body:
        raise BadRequest("'messages' is required")
    raw = body["messages"]
    if not isinstance(raw, list):
        raise BadRequest("'messages' must be an array")
    for msg in raw:
        messages.extend(_convert_message(msg))
    chat: dict[str, Any] = {"messages": messages}
    if "model" in body:
        chat["model"] = body["model"]
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise BadRequest("'tools' must be an array of objects")
        chat["tools"] = [
            {"type": "function", "function": {
                "name": t.get("name", ""), "description": t.get("description", ""),
                "parameters": t.get("input_schema", {}),
            }}
            for t in tools
        ]
    for key in ("tool_choice", "thinking", "metadata"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise BadRequest(f"'{key}' must be an object")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "auto":
            chat["tool_choice"] = "auto"
        elif kind in ("any", "tool"):
            chat["tool_choice"] = "required"
        elif kind == "none":
            chat["tool_choice"] = "none"
    if "stop_sequences" in body:
        chat["stop"] = body["stop_sequences"]
    chat["max_tokens"] = body.get("max_tokens", 4096)
    for key in ("temperature", "top_p", "top_k", "stream", "chat_template_kwargs"):
        if key in body:
            chat[key] = body[key]
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        chat["thinking_budget_tokens"] = thinking.get("budget_tokens", 10000)
    elif isinstance(thinking, dict) and thinking.get("type") == "disabled":
        kwargs = chat.get("chat_template_kwargs")
        chat["chat_template_kwargs"] = {"enable_thinking": False, **(kwargs if isinstance(kwargs, dict) else {})}
    return chat
