"""OpenAI Responses requests turned into chat requests (llama-server's
server_chat_convert_responses_to_chatcmpl, rule for rule).

`instructions` becomes a system message, a string `input` a user message; input items
become messages: input/output messages, `function_call` items become the assistant's
tool calls (merged into the assistant turn before them), `function_call_output` items
`tool` messages, `reasoning` items `reasoning_content`. Function tools keep their schema;
other tool types (web search, ...) have no chat equivalent and are skipped, as there.
"""

from __future__ import annotations

import logging
from typing import Any

from asgi.errors import BadRequest

log = logging.getLogger(__name__)


def _is(item: dict[str, Any], key: str, kind: type) -> bool:
    return isinstance(item.get(key), kind)


def _input_parts(content: list[Any]) -> list[dict[str, Any]]:
    parts = []
    for part in content:
        kind = part.get("type", "") if isinstance(part, dict) else ""
        if kind == "input_text":
            if "text" not in part:
                raise BadRequest("'Input text' requires 'text'")
            parts.append({"text": part["text"], "type": "text"})
        elif kind == "input_image":
            if "image_url" not in part:
                raise BadRequest("'image_url' is required")
            parts.append({"image_url": {"url": part["image_url"]}, "type": "image_url"})
        elif kind == "input_file":
            raise BadRequest("'input_file' is not supported by llamacpp at this moment")
        else:
            raise BadRequest("'type' must be one of 'input_text', 'input_image', or 'input_file'")
    return parts


def _output_parts(item: dict[str, Any]) -> list[dict[str, Any]]:
    content = item.get("content")
    if isinstance(content, str):
        return [{"text": content, "type": "text"}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type", "") if isinstance(part, dict) else ""
        if kind in ("output_text", "input_text"):
            if not _is(part, "text", str):
                raise BadRequest("'Output text' requires 'text'")
            parts.append({"text": part["text"], "type": "text"})
        elif kind == "refusal":
            if not _is(part, "refusal", str):
                raise BadRequest("'Refusal' requires 'refusal'")
            parts.append({"text": part["refusal"], "type": "text"})
        else:
            raise BadRequest("'type' must be one of 'output_text' or 'refusal'")
    return parts


def _tool_output(item: dict[str, Any]) -> dict[str, Any]:
    output = item["output"]
    if isinstance(output, str):
        return {"content": output, "role": "tool", "tool_call_id": item["call_id"]}
    parts = []
    for part in output:
        if not isinstance(part, dict) or "type" not in part:
            raise BadRequest("Output of tool call missing 'type' field")
        if part["type"] == "input_text":
            parts.append({**part, "type": "text"})
        elif part["type"] == "input_image":
            if "image_url" not in part:
                raise BadRequest("'image_url' is required")
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise BadRequest("Output of tool call should be 'Input text' or 'Input image'")
    return {"content": parts, "role": "tool", "tool_call_id": item["call_id"]}


def _items_to_messages(items: list[Any], messages: list[dict[str, Any]]) -> None:
    for raw in items:
        if not isinstance(raw, dict):
            raise BadRequest("Cannot determine type of 'item'")
        item = dict(raw)
        merge = bool(messages) and messages[-1].get("role") == "assistant"
        if _is(item, "content", str):
            item["content"] = [{"text": item["content"], "type": "input_text"}]
        if _is(item, "content", list) and item.get("role") in ("user", "system", "developer"):
            messages.append({"role": item["role"], "content": _input_parts(item["content"])})
        elif item.get("role") == "assistant" and item.get("type") == "message":
            parts = _output_parts(item)
            if merge:
                prev = messages[-1]
                if not isinstance(prev.get("content"), list):
                    prev["content"] = []
                prev["content"].extend(parts)
            else:
                messages.append({"role": "assistant", "content": parts})
        elif item.get("type") == "function_call" and all(_is(item, k, str) for k in ("arguments", "call_id", "name")):
            call = {"function": {"arguments": item["arguments"], "name": item["name"]}, "id": item["call_id"],
                    "type": "function"}
            if merge:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item.get("type") == "function_call_output" and _is(item, "call_id", str) and \
                (_is(item, "output", str) or _is(item, "output", list)):
            messages.append(_tool_output(item))
        elif item.get("type") == "reasoning" and _is(item, "summary", list):
            content = item.get("content")
            if not isinstance(content, list):
                raise BadRequest("item['content'] is not an array")
            if not content:
                raise BadRequest("item['content'] is empty")
            if not isinstance(content[0], dict) or not _is(content[0], "text", str):
                raise BadRequest("item['content']['text'] is not a string")
            if merge:
                messages[-1]["reasoning_content"] = content[0]["text"]
            else:
                messages.append({"role": "assistant", "content": "", "reasoning_content": content[0]["text"]})
        else:
            raise BadRequest("Cannot determine type of 'item'")


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request a Responses request stands for."""
    if "input" not in body:
        raise BadRequest("'input' is required")
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous:
        raise BadRequest("llama.cpp does not support 'previous_response_id'.")
    chat = {k: v for k, v in body.items() if k not in ("input", "instructions", "tools", "max_output_tokens",
                                                       "reasoning", "previous_response_id")}
    messages: list[dict[str, Any]] = []
    if "instructions" in body:
        instructions = body["instructions"]
        if instructions is not None and not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string")
        messages.append({"role": "system", "content": instructions or ""})
    value = body["input"]
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        _items_to_messages(value, messages)
    else:
        raise BadRequest("'input' must be a string or array of objects")
    chat["messages"] = messages
    if "tools" in body:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise BadRequest("'tools' must be an array of objects")
        converted = []
        for tool in tools:
            if not isinstance(tool, dict):
                raise BadRequest("'tools' must be an array of objects")
            if tool.get("type") != "function":
                log.warning("unsupported Responses tool type %r skipped", tool.get("type"))
                continue
            function = {k: v for k, v in tool.items() if k != "type"}
            function.setdefault("strict", True)
            converted.append({"type": "function", "function": function})
        if converted:
            chat["tools"] = converted
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and "effort" in reasoning:
        chat["reasoning_effort"] = reasoning["effort"]
    return chat
