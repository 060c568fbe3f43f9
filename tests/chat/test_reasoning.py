"""Reasoning models: thinking on/off in the prompt, and thoughts split from the answer.

The template cases are llama.cpp's test_template.py::test_reasoning (same templates,
copied into tests/chat/templates/, same expected prompt endings), run on the engine's
ChatTemplate directly; the splitting cases cover the DeepSeek R1 / Qwen 3 conventions
(`<think>` opened by the prompt or by the model), streamed piece by piece.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pyllama.chat import ChatInputs, ChatMessage, ChatTemplate
from pyllama.chat.reasoning import (
    ReasoningConfig,
    ReasoningStream,
    enable_thinking,
    split_reasoning,
    thinking_tags,
)
from pyllama.errors import InvalidRequestError

TEMPLATES = Path(__file__).parent / "templates"
TOOL = {"type": "function", "function": {"name": "python", "description": "Runs code",
                                         "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}


def _prompt(name: str, mode: str, tools: list[dict] | None) -> str:
    template = ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(), bos_token="<s>", eos_token="</s>")
    config = ReasoningConfig(mode=mode)
    kwargs = {"enable_thinking": mode == "on"} if mode in ("on", "off") else {}
    thinking = enable_thinking(config, template.thinking is not None, {}, kwargs)
    inputs = ChatInputs(messages=[ChatMessage("user", "What is today?")], tools=tools or [], kwargs=kwargs,
                        enable_thinking=thinking)
    return template.apply(inputs).prompt


@pytest.mark.parametrize("tools", [None, [], [TOOL]])
@pytest.mark.parametrize("name, mode, expected_end", [
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "on", "<think>\n"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "auto", "<think>\n"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "off", "<think>\n</think>"),
    ("Qwen-Qwen3-0.6B", "auto", "<|im_start|>assistant\n"),
    ("Qwen-Qwen3-0.6B", "off", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("Qwen-QwQ-32B", "auto", "<|im_start|>assistant\n<think>\n"),
    ("Qwen-QwQ-32B", "off", "<|im_start|>assistant\n<think>\n</think>"),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "auto", "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "off",
     "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_THINKING|><|END_THINKING|>"),
])
def test_reasoning_prompt_endings(name: str, mode: str, expected_end: str, tools: list[dict] | None) -> None:
    prompt = _prompt(name, mode, tools)
    assert prompt.endswith(expected_end), prompt[-120:]


def test_thinking_tags_found_in_sources() -> None:
    assert thinking_tags((TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()) == ("<think>", "</think>")
    assert thinking_tags((TEMPLATES / "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja").read_text()) == (
        "<|START_THINKING|>", "<|END_THINKING|>")
    assert thinking_tags("{{ messages[0].content }}") is None


def test_enable_thinking_precedence() -> None:
    auto = ReasoningConfig()
    assert enable_thinking(auto, True, {}, {}) is True
    assert enable_thinking(auto, False, {}, {}) is False
    assert enable_thinking(ReasoningConfig(mode="off"), True, {}, {}) is False
    assert enable_thinking(auto, True, {}, {"enable_thinking": False}) is False
    assert enable_thinking(auto, True, {"reasoning_effort": "none"}, {}) is False
    assert enable_thinking(ReasoningConfig(budget=0), True, {}, {}) is False
    with pytest.raises(InvalidRequestError, match="expected boolean"):
        enable_thinking(auto, True, {}, {"enable_thinking": "yes"})


TAGS = ("<think>", "</think>")
REPLY = "<think>\nLet me add.\n2 + 2 = 4\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize("fmt, reasoning, content", [
    ("deepseek", "Let me add.\n2 + 2 = 4", "The answer is 4."),
    ("none", "", REPLY),
    ("deepseek-legacy", "Let me add.\n2 + 2 = 4", None),
])
def test_split_whole_reply(fmt: str, reasoning: str, content: str | None) -> None:
    split = split_reasoning(REPLY, TAGS, started_open=False, fmt=fmt)
    assert split.reasoning == reasoning
    if content is not None:
        assert split.content == content
    else:  # legacy keeps the tagged thoughts in the content too
        assert "<think>" in split.content and split.content.endswith("The answer is 4.")


def test_split_when_the_prompt_opened_the_block() -> None:
    split = split_reasoning("I think.\n</think>\nDone", TAGS, started_open=True, fmt="deepseek")
    assert (split.reasoning, split.content) == ("I think.", "Done")
    unclosed = split_reasoning("Still thinking when the budget ran out", TAGS, started_open=True, fmt="deepseek")
    assert (unclosed.reasoning, unclosed.content) == ("Still thinking when the budget ran out", "")
    plain = split_reasoning("No thoughts here", TAGS, started_open=False, fmt="deepseek")
    assert (plain.reasoning, plain.content) == ("", "No thoughts here")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_streamed_pieces_add_up_to_the_whole(size: int) -> None:
    stream = ReasoningStream(TAGS, started_open=False, fmt="deepseek")
    reasoning, content = "", ""
    for i in range(0, len(REPLY), size):
        r, c = stream.feed(REPLY[i:i + size])
        assert "<" not in r + c or size == 100  # a tag is never shown half-way
        reasoning, content = reasoning + r, content + c
    r, c = stream.flush()
    assert (reasoning + r, content + c) == ("Let me add.\n2 + 2 = 4", "The answer is 4.")


@pytest.mark.parametrize("tools", [None, [], [TOOL]])
def test_firefunction_v2_gets_functions_and_date(tools: list[dict] | None) -> None:
    """llama.cpp's test_date_inside_prompt: the template reads `functions` (the tools as JSON)."""
    template = ChatTemplate((TEMPLATES / "fireworks-ai-llama-3-firefunction-v2.jinja").read_text())
    now = 1_700_000_000.0
    prompt = template.apply(ChatInputs(messages=[ChatMessage("user", "What is today?")], tools=tools or [],
                                       now=now)).prompt
    assert time.strftime("%b %d %Y", time.localtime(now)) in prompt
    assert ('"name": "python"' in prompt) == bool(tools)
