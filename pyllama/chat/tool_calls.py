"""Tool calling: how tools are offered to a model and how its calls are read back.

A model learned one way of writing a function call, and its chat template shows which:
Hermes/Qwen write `<tool_call>{json}</tool_call>`, Mistral writes `[TOOL_CALLS][...]`,
Llama 3.1 writes a bare `{"name": ..., "parameters": ...}`. Any other model gets
llama.cpp's *generic* format: a system note asks for JSON, a grammar forces the reply to
be either `{"tool_call": {...}}` or `{"response": "..."}`, and the JSON is parsed back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pyllama.chat.messages import ToolCall

CONTENT_ONLY = "Content-only"
GENERIC = "Generic"
HERMES = "Hermes 2 Pro"
MISTRAL = "Mistral Nemo"
LLAMA3 = "Llama 3.x"

GENERIC_SYSTEM_NOTE = (
    "Respond in JSON format, either with `tool_call` (a request to call tools) or with `response` "
    "reply to the user's request"
)


@dataclass
class ToolPlan:
    """What the template layer decided for one request with tools."""

    format: str
    schema: dict[str, Any] | None = None  # constrain the output to this JSON schema
    schema_prefix: str = ""  # literal text the constrained output starts with ("[TOOL_CALLS]")
    system_note: str | None = None
    preserved: list[str] = field(default_factory=list)


def detect_format(source: str) -> str:
    """The tool-call format a template was written for, by its text (as llama.cpp detects it)."""
    if "<tool_call>" in source:
        return HERMES
    if "[TOOL_CALLS]" in source:
        return MISTRAL
    if "<|start_header_id|>" in source and "ipython" in source:
        return LLAMA3
    return GENERIC


def _call_schema(tool: dict[str, Any], *, args_key: str, with_id: bool) -> dict[str, Any]:
    function = tool["function"]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": function["name"]},
            args_key: function.get("parameters", {"type": "object"}),
        },
        "required": ["name", args_key],
    }
    if with_id:
        schema["properties"]["id"] = {"type": "string", "minLength": 4}
        schema["required"].append("id")
    return schema


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def plan_tools(
    fmt: str,
    tools: list[dict[str, Any]],
    *,
    tool_choice: str,
    parallel: bool,
    response_schema: dict[str, Any] | None,
) -> ToolPlan:
    """Decide the prompt note and output constraint for `tools` in format `fmt`."""
    if fmt == GENERIC:
        calls = [_call_schema(t, args_key="arguments", with_id=parallel) for t in tools]
        if parallel:
            call: dict[str, Any] = {
                "type": "object",
                "properties": {"tool_calls": {"type": "array", "items": _one_of(calls), "minItems": 1}},
                "required": ["tool_calls"],
            }
        else:
            call = {"type": "object", "properties": {"tool_call": _one_of(calls)}, "required": ["tool_call"]}
        schema = call
        if tool_choice != "required":
            response = {
                "type": "object",
                "properties": {"response": response_schema or {"type": "string"}},
                "required": ["response"],
            }
            schema = {"anyOf": [call, response]}
        return ToolPlan(format=GENERIC, schema=schema, system_note=GENERIC_SYSTEM_NOTE)
    if tool_choice != "required":
        return ToolPlan(format=fmt)  # free text, calls recognized by their markers
    if fmt == MISTRAL:
        items = _one_of([_call_schema(t, args_key="arguments", with_id=False) for t in tools])
        array: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        return ToolPlan(format=fmt, schema=array, schema_prefix="[TOOL_CALLS]")
    args_key = "parameters" if fmt == LLAMA3 else "arguments"
    return ToolPlan(format=fmt, schema=_one_of([_call_schema(t, args_key=args_key, with_id=False) for t in tools]))


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """How tools are described to a model whose template cannot show them (minja's polyfill)."""
    return "You can call any of the following tools to satisfy the user's requests: " + json.dumps(
        [t["function"] for t in tools], indent=2, ensure_ascii=False
    )


_DECODER = json.JSONDecoder()


def _json_at(text: str, start: int) -> tuple[Any, int] | None:
    """Decode one JSON value starting at `start` (after whitespace); None if incomplete/invalid."""
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        return None


def _as_call(obj: Any, args_key: str = "arguments") -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return ToolCall(name=obj["name"], arguments=arguments, id=str(obj.get("id") or ""))


@dataclass
class ParsedOutput:
    content: str
    tool_calls: list[ToolCall]


def _parse_generic(text: str) -> ParsedOutput:
    decoded = _json_at(text, 0)
    if decoded is None or not isinstance(decoded[0], dict):
        return ParsedOutput(text, [])
    value = decoded[0]
    if isinstance(value.get("tool_calls"), list):
        calls = [c for c in (_as_call(v) for v in value["tool_calls"]) if c is not None]
        return ParsedOutput("", calls)
    if "tool_call" in value:
        call = _as_call(value["tool_call"])
        return ParsedOutput("", [call] if call else [])
    if "response" in value:
        response = value["response"]
        return ParsedOutput(response if isinstance(response, str) else json.dumps(response, indent=2), [])
    return ParsedOutput(text, [])


_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _parse_hermes(text: str) -> ParsedOutput:
    calls: list[ToolCall] = []
    content_parts = []
    last = 0
    for match in _HERMES_CALL.finditer(text):
        decoded = _json_at(match.group(1), 0)
        call = _as_call(decoded[0]) if decoded else None
        if call is None:
            continue
        content_parts.append(text[last : match.start()])
        calls.append(call)
        last = match.end()
    content_parts.append(text[last:])
    return ParsedOutput("".join(content_parts).strip() if calls else text, calls)


def _parse_mistral(text: str) -> ParsedOutput:
    index = text.find("[TOOL_CALLS]")
    if index < 0:
        return ParsedOutput(text, [])
    decoded = _json_at(text, index + len("[TOOL_CALLS]"))
    if decoded is None or not isinstance(decoded[0], list):
        return ParsedOutput(text, [])
    calls = [c for c in (_as_call(v) for v in decoded[0]) if c is not None]
    return ParsedOutput(text[:index], calls)


def _parse_llama3(text: str) -> ParsedOutput:
    body = text.removeprefix("<|python_tag|>")
    decoded = _json_at(body, 0)
    if decoded is None:
        return ParsedOutput(text, [])
    call = _as_call(decoded[0], args_key="parameters")
    return ParsedOutput("", [call]) if call else ParsedOutput(text, [])


def parse_output(text: str, fmt: str) -> ParsedOutput:
    """Split a finished assistant reply into content and tool calls, per format."""
    if fmt == GENERIC:
        return _parse_generic(text)
    if fmt == HERMES:
        return _parse_hermes(text)
    if fmt == MISTRAL:
        return _parse_mistral(text)
    if fmt == LLAMA3:
        return _parse_llama3(text)
    return ParsedOutput(text, [])


_RESPONSE_OPEN = re.compile(r'\s*\{\s*"response"\s*:\s*"')


def _partial_json_string(body: str) -> str:
    """The decoded text of a JSON string body that may still be growing (no closing quote yet)."""
    escaped = False
    for i, c in enumerate(body):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            body = body[:i]
            break
    for cut in range(min(len(body), 12) + 1):  # drop a trailing incomplete escape such as \u00
        try:
            decoded: str = json.loads('"' + body[: len(body) - cut] + '"')
            return decoded
        except json.JSONDecodeError:
            continue
    return ""


def streamable_content(text: str, fmt: str) -> str:
    """The reply's user-visible content as far as a partial output shows it.

    While streaming with tools, this is what can be sent before the reply is finished:
    text before a tool-call marker (Hermes, Mistral), the growing `"response"` string of
    the generic JSON format, plain text that cannot be a Llama 3 call. Anything that may
    still turn out to be a call is held back.
    """
    if fmt == GENERIC:
        match = _RESPONSE_OPEN.match(text)
        return _partial_json_string(text[match.end() :]) if match else ""
    if fmt == LLAMA3:
        head = text.lstrip()
        if not head or head.startswith("{") or "<|python_tag|>".startswith(head[:14]) or head.startswith("<|python_tag|>"):
            return ""
        return text
    return text[: streamable_prefix(text, fmt)]


def streamable_prefix(text: str, fmt: str) -> int:
    """How many leading characters of a partial reply are surely plain content.

    While streaming with tools, text before a tool-call marker can be sent at once; from
    the marker on (or anything that could be its start) it is held until the end. The
    generic and Llama 3 formats are JSON from the first character, so nothing streams.
    """
    if fmt in (GENERIC, LLAMA3):
        return 0
    marker = "<tool_call>" if fmt == HERMES else "[TOOL_CALLS]" if fmt == MISTRAL else ""
    if not marker:
        return len(text)
    found = text.find(marker)
    if found >= 0:
        return found
    for keep in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-keep:]):
            return len(text) - keep
    return len(text)
