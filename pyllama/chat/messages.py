"""OpenAI-style chat messages, checked and normalized before a template sees them.

Clients send content as a string, null, or a list of typed parts; assistant messages may
carry `tool_calls` instead of content. Templates expect one consistent shape, and a bad
message must be a 400 with a sentence, not a Jinja traceback, so the checks of
llama-server's `oaicompat_chat_params_parse` happen here, once.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from pyllama.errors import InvalidRequestError
from pyllama.json_limits import check_json_depth


@dataclass
class ToolCall:
    """One function call the assistant made (arguments kept as the JSON text the model wrote)."""

    name: str
    arguments: str
    id: str = ""

    def to_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}, "id": self.id}


@dataclass
class ChatMessage:
    role: str
    content: str | None = None
    parts: list[dict[str, Any]] | None = None  # typed content, when the client sent a list
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        """The content as one string: typed text parts joined by newlines, as llama.cpp does."""
        if self.parts is not None:
            return "\n".join(str(p.get("text", "")) for p in self.parts if p.get("type") == "text")
        return self.content or ""


def _parse_tool_calls(raw: Any) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError("'tool_calls' must be an array")
    calls = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("function"), dict):
            raise InvalidRequestError("each tool call must be an object with a 'function' object")
        function = item["function"]
        name = function.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("a tool call's function must have a string 'name'")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        check_json_depth(arguments, "a tool call's 'arguments'")  # templates json.loads it
        call_id = item.get("id") or ""
        calls.append(ToolCall(name=name, arguments=arguments, id=str(call_id)))
    return calls


def _parse_parts(content: list[Any]) -> list[dict[str, Any]]:
    parts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequestError("each content part must be an object with a 'type'")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequestError("a 'text' content part must have a string 'text'")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "input_audio", "input_video", "file"):
            what = "image input" if kind == "image_url" else f"'{kind}' content"
            raise InvalidRequestError(
                f"{what} is not supported: this server runs text-only models (no multimodal projector)"
            )
        else:
            raise InvalidRequestError(f"unsupported content part type '{kind}'")
    return parts


def parse_messages(raw: Any) -> list[ChatMessage]:
    """Validate the request's `messages` and turn them into ChatMessage objects."""
    if raw is None:
        raise InvalidRequestError("'messages' is required")
    if not isinstance(raw, list):
        raise InvalidRequestError("Expected 'messages' to be an array")
    messages = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidRequestError("each message must be an object")
        role = item.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequestError("each message must have a string 'role'")
        tool_calls = _parse_tool_calls(item.get("tool_calls"))
        if role != "assistant" and "content" not in item:
            raise InvalidRequestError("All non-assistant messages must contain 'content'")
        if role == "assistant" and "content" not in item and not tool_calls:
            raise InvalidRequestError("Assistant message must contain either 'content' or 'tool_calls'!")
        content = item.get("content")
        message = ChatMessage(role=role, tool_calls=tool_calls)
        if isinstance(content, str) or content is None:
            message.content = content
        elif isinstance(content, list):
            message.parts = _parse_parts(content)
        else:
            raise InvalidRequestError("Expected 'content' to be a string or an array")
        for key in ("tool_call_id", "name", "reasoning_content"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(f"'{key}' must be a string")
            setattr(message, key, value)
        messages.append(message)
    return messages


def to_template_dict(message: ChatMessage, *, typed_content: bool, object_arguments: bool) -> dict[str, Any]:
    """The dict a Jinja template receives for one message."""
    out: dict[str, Any] = {"role": message.role}
    if typed_content:
        out["content"] = message.parts if message.parts is not None else [{"type": "text", "text": message.content or ""}]
    else:
        out["content"] = message.text() if (message.parts is not None or message.content is not None) else None
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            arguments: Any = call.arguments
            if object_arguments:
                with contextlib.suppress(json.JSONDecodeError):
                    arguments = json.loads(call.arguments)
            entry: dict[str, Any] = {"type": "function", "function": {"name": call.name, "arguments": arguments}}
            if call.id:
                entry["id"] = call.id
            calls.append(entry)
        out["tool_calls"] = calls
        if out["content"] is None:
            out["content"] = ""
    for key in ("tool_call_id", "name", "reasoning_content"):
        value = getattr(message, key)
        if value is not None:
            out[key] = value
    return out


def parse_tools(raw: Any) -> list[dict[str, Any]]:
    """Validate OpenAI `tools`: a list of {"type": "function", "function": {name, parameters}}."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError("'tools' must be an array")
    tools = []
    for tool in raw:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequestError("each tool must be an object with \"type\": \"function\"")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError("each tool must have a 'function' object with a string 'name'")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InvalidRequestError(f"tool '{function['name']}': 'parameters' must be a JSON schema object")
        entry: dict[str, Any] = {"name": function["name"], "parameters": parameters}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        tools.append({"type": "function", "function": entry})
    return tools
