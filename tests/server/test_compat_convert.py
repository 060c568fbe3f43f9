"""The Anthropic and Responses translators never fail on odd input with anything but a 400.

Both take arbitrary client JSON; Hypothesis throws shapes at them (wrong types at every
level, blocks and items of unknown kinds), and the only exception allowed is BadRequest.
What they produce must then be a body the chat path's own validation accepts or refuses
with a 400 (pyllama.chat.parse_messages / parse_tools), never a crash.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi.anthropic_convert import anthropic_to_chat
from asgi.errors import BadRequest
from asgi.responses_convert import responses_to_chat
from pyllama.chat import parse_messages, parse_tools
from pyllama.errors import InvalidRequestError

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                    st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "input_text",
                                     "input_image", "function_call", "function_call_output", "reasoning", "message",
                                     "user", "assistant", "system", "base64", "url"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["type", "role", "content", "text", "source", "id", "name", "input",
                                     "tool_use_id", "thinking", "call_id", "arguments", "output", "summary",
                                     "media_type", "data", "url", "image_url"]), inner, max_size=5)),
    max_leaves=16)
BODIES = st.dictionaries(st.sampled_from(["messages", "system", "tools", "tool_choice", "thinking", "metadata",
                                          "input", "instructions", "max_output_tokens", "reasoning",
                                          "previous_response_id", "stop_sequences"]), VALUES, max_size=5)


def _through_chat(chat: dict[str, Any]) -> None:
    try:
        parse_messages(chat.get("messages"))
        parse_tools(chat.get("tools"))
    except InvalidRequestError:
        pass


@settings(max_examples=200, deadline=None)
@given(BODIES)
def test_anthropic_translation_fails_only_with_400(body: dict[str, Any]) -> None:
    try:
        chat = anthropic_to_chat(body)
    except BadRequest:
        return
    _through_chat(chat)


@settings(max_examples=200, deadline=None)
@given(BODIES)
def test_responses_translation_fails_only_with_400(body: dict[str, Any]) -> None:
    try:
        chat = responses_to_chat(body)
    except BadRequest:
        return
    _through_chat(chat)
