"""Chat templates against llama.cpp's own expected outputs (tests/test-chat-template.cpp)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyllama.chat import (
    CHATML_SOURCE,
    ChatInputs,
    ChatTemplate,
    TemplateError,
    builtin_name,
    detect_builtin,
    parse_messages,
)
from pyllama.chat.builtin import apply_builtin
from pyllama.errors import InvalidRequestError

DATA = json.loads((Path(__file__).parent / "llama_cpp_template_cases.json").read_text())
CONVERSATION: list[tuple[str, str]] = [(r, c) for r, c in DATA["conversation"]]
CASES: list[dict[str, Any]] = DATA["cases"]


def _messages(turns: list[tuple[str, str]]) -> ChatInputs:
    return ChatInputs(messages=parse_messages([{"role": r, "content": c} for r, c in turns]))


@pytest.mark.parametrize("case", [c for c in CASES if c.get("supported_with_jinja", True)], ids=lambda c: c["name"])
def test_jinja_render_matches_llama_cpp(case: dict[str, Any]) -> None:
    template = ChatTemplate(case["template_str"], bos_token=case.get("bos_token", ""), eos_token=case.get("eos_token", ""))
    expected = case.get("expected_output_jinja") or case["expected_output"]
    assert template.apply(_messages(CONVERSATION)).prompt == expected


DETECTED = [c for c in CASES if detect_builtin(c["template_str"])]


@pytest.mark.parametrize("case", DETECTED, ids=lambda c: c["name"])
def test_builtin_formatter_matches_llama_chat_apply_template(case: dict[str, Any]) -> None:
    name = detect_builtin(case["template_str"])
    assert name is not None
    assert apply_builtin(name, CONVERSATION, True) == case["expected_output"]


def test_enough_llama_cpp_cases_are_covered() -> None:
    assert len(CASES) >= 30
    assert len(DETECTED) >= 25


@pytest.mark.parametrize(
    "name", ["chatml", "llama2", "llama3", "mistral-v7", "gemma", "phi3", "zephyr", "vicuna", "deepseek", "command-r"]
)
def test_required_builtin_names_are_selectable(name: str) -> None:
    template = ChatTemplate.resolve("{{ 'model template' }}", name)
    assert template.builtin == name
    prompt = template.apply(_messages([("user", "Hello")])).prompt
    assert "Hello" in prompt and "model template" not in prompt


def test_llama_cpp_python_chat_format_aliases() -> None:
    assert builtin_name("llama-2") == "llama2"
    assert builtin_name("llama-3") == "llama3"
    assert builtin_name("no-such-format") is None


def test_no_model_template_falls_back_to_chatml() -> None:
    template = ChatTemplate.resolve(None)
    assert template.source == CHATML_SOURCE
    assert template.apply(_messages([("user", "hi")])).prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_broken_model_template_falls_back_to_detected_builtin() -> None:
    broken = "{% for m in messages %}<start_of_turn>{{ m.content }{% endfor %}"
    template = ChatTemplate.resolve(broken)
    assert template.builtin == "gemma"


def test_broken_override_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate.resolve(None, "{% if %}")


def test_raise_exception_becomes_invalid_request() -> None:
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(InvalidRequestError, match="roles must alternate"):
        template.apply(_messages([("user", "x")]))


def test_sandbox_blocks_python_internals() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequestError):
        template.apply(_messages([("user", "x")]))


def test_helpers_available_to_templates() -> None:
    source = "{{ strftime_now('%Y') }}|{{ messages | tojson }}|{{ bos_token }}{{ eos_token }}|{{ date_string }}"
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    prompt = template.apply(_messages([("user", "é")])).prompt
    year, dumped, tokens, date = prompt.split("|")
    assert len(year) == 4 and year.isdigit()
    assert json.loads(dumped) == [{"role": "user", "content": "é"}] and "é" in dumped
    assert tokens == "<s></s>"
    assert len(date.split()) == 3


def test_leading_bos_is_stripped_when_the_tokenizer_adds_it() -> None:
    template = ChatTemplate("{{ bos_token }}{{ messages[0].content }}", bos_token="<s>", add_bos=True)
    assert template.apply(_messages([("user", "x")])).prompt == "x"


def test_system_role_is_merged_when_the_template_has_none() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "[{{ m.role }}]{{ m.content }}{% endfor %}"
    )
    template = ChatTemplate(source)
    assert not template.caps.supports_system_role
    prompt = template.apply(_messages([("system", "Be brief."), ("user", "Hi")])).prompt
    assert prompt == "[user]Be brief.\nHi"


def test_generation_prompt_is_the_suffix_add_generation_prompt_adds() -> None:
    result = ChatTemplate(CHATML_SOURCE).apply(_messages([("user", "hi")]))
    assert result.generation_prompt == "<|im_start|>assistant\n"


def test_typed_content_parts_are_joined_for_string_templates() -> None:
    inputs = ChatInputs(
        messages=parse_messages(
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
        )
    )
    assert ChatTemplate(CHATML_SOURCE).apply(inputs).prompt.startswith("<|im_start|>user\na\nb<|im_end|>")


@pytest.mark.parametrize(
    "messages, message",
    [
        (None, "'messages' is required"),
        ({"role": "user"}, "to be an array"),
        ([{"role": "user"}], "must contain 'content'"),
        ([{"role": "assistant"}], "either 'content' or 'tool_calls'"),
        ([{"role": "user", "content": 5}], "string or an array"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "not supported"),
    ],
)
def test_bad_messages_are_rejected_with_a_sentence(messages: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_messages(messages)


def test_trailing_assistant_message_is_continued() -> None:
    template = ChatTemplate.resolve(None, "llama3")
    inputs = _messages([("user", "What is the best book"), ("assistant", "Whill")])
    assert template.apply(inputs).prompt.endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the best book<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nWhill"
    )
    with pytest.raises(InvalidRequestError, match="2 or more assistant"):
        template.apply(_messages([("user", "a"), ("assistant", "b"), ("assistant", "c")]))
    plain = ChatInputs(messages=inputs.messages, add_generation_prompt=False)
    assert template.apply(plain).prompt.endswith("Whill<|eot_id|>")  # no prefill without a generation prompt
    # typed parts of the continued message are joined by a blank line (llama.cpp's render_content)
    parts = parse_messages([{"role": "user", "content": "What is the best book"},
                            {"role": "assistant", "content": [{"type": "text", "text": "Wh"},
                                                              {"type": "text", "text": "ill"}]}])
    assert template.apply(ChatInputs(messages=parts)).prompt.endswith("<|end_header_id|>\n\nWh\n\nill")
