"""Tool calls: which format a template implies, what is asked of the model, and parsing replies."""

from __future__ import annotations

import json

from pyllama.chat import CHATML_SOURCE, ChatInputs, ChatTemplate, parse_messages, parse_output, parse_tools
from pyllama.chat import tool_calls as tc
from pyllama.chat.tool_calls import streamable_content, streamable_prefix

WEATHER = parse_tools(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
)

HERMES_SOURCE = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_generic_format_for_a_template_without_tool_support() -> None:
    template = ChatTemplate(CHATML_SOURCE)
    inputs = ChatInputs(messages=parse_messages([{"role": "user", "content": "Paris?"}]), tools=WEATHER)
    result = template.apply(inputs)
    assert result.format == tc.GENERIC and result.parse_tool_calls
    assert tc.GENERIC_SYSTEM_NOTE in result.prompt
    assert '"get_weather"' in result.prompt  # tools described in the system prompt (polyfill)
    assert result.schema is not None and len(result.schema["anyOf"]) == 2


def test_tool_choice_required_and_none() -> None:
    template = ChatTemplate(CHATML_SOURCE)
    messages = parse_messages([{"role": "user", "content": "Paris?"}])
    required = template.apply(ChatInputs(messages=messages, tools=WEATHER, tool_choice="required"))
    assert required.schema is not None and required.schema["required"] == ["tool_call"]
    none = template.apply(ChatInputs(messages=messages, tools=WEATHER, tool_choice="none"))
    assert none.format == tc.CONTENT_ONLY and none.schema is None and "get_weather" not in none.prompt


def test_native_hermes_template_gets_tools_and_renders_past_calls() -> None:
    template = ChatTemplate(HERMES_SOURCE)
    assert template.caps.supports_tools and template.caps.supports_tool_calls
    assert template.tool_format == tc.HERMES
    messages = parse_messages(
        [
            {"role": "user", "content": "Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
    )
    result = template.apply(ChatInputs(messages=messages, tools=WEATHER))
    assert result.format == tc.HERMES and result.schema is None
    assert "<tools>" in result.prompt and "<tool_call>" in result.prompt and "sunny" in result.prompt


def test_past_tool_calls_are_polyfilled_for_plain_templates() -> None:
    messages = parse_messages(
        [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ]
    )
    prompt = ChatTemplate(CHATML_SOURCE).apply(ChatInputs(messages=messages)).prompt
    assert '"tool_calls"' in prompt and '"tool_response"' in prompt and "sunny" in prompt


def test_parse_generic_call_and_response() -> None:
    out = parse_output('{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}', tc.GENERIC)
    assert out.content == "" and len(out.tool_calls) == 1
    assert out.tool_calls[0].name == "get_weather" and json.loads(out.tool_calls[0].arguments) == {"city": "Paris"}
    out = parse_output('{"response": "It is sunny."}', tc.GENERIC)
    assert out.content == "It is sunny." and out.tool_calls == []
    out = parse_output("not json at all", tc.GENERIC)
    assert out.content == "not json at all"


def test_parse_hermes_mistral_llama3() -> None:
    text = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    out = parse_output(text, tc.HERMES)
    assert out.content == "Let me check." and out.tool_calls[0].name == "get_weather"
    out = parse_output('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}, "id": "abcdefghi"}]', tc.MISTRAL)
    assert out.tool_calls[0].id == "abcdefghi" and json.loads(out.tool_calls[0].arguments) == {"city": "Rome"}
    out = parse_output('{"name": "get_weather", "parameters": {"city": "Lima"}}', tc.LLAMA3)
    assert json.loads(out.tool_calls[0].arguments) == {"city": "Lima"}


def test_streamable_prefix_holds_back_possible_markers() -> None:
    assert streamable_prefix("Hello <tool", tc.HERMES) == len("Hello ")
    assert streamable_prefix("Hello <tool_call>{", tc.HERMES) == len("Hello ")
    assert streamable_prefix("Hello there", tc.HERMES) == len("Hello there")
    assert streamable_prefix('{"response": "x"', tc.GENERIC) == 0


def test_streamable_content_per_format() -> None:
    assert streamable_content('{"response": "Hel', tc.GENERIC) == "Hel"
    assert streamable_content('{\n  "response": "a\\nb\\u00e9 \\u00', tc.GENERIC) == "a\nbé "
    assert streamable_content('{"response": "done", "x', tc.GENERIC) == "done"
    assert streamable_content('{"tool_call": {"name": "f"', tc.GENERIC) == ""
    assert streamable_content("Sure. <tool_c", tc.HERMES) == "Sure. "
    assert streamable_content('{"name": "f"', tc.LLAMA3) == "" and streamable_content("<|python", tc.LLAMA3) == ""
    assert streamable_content("It is sunny.", tc.LLAMA3) == "It is sunny."
