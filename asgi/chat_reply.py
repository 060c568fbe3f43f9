"""A chat reply as it is generated: thoughts, answer text and tool calls, told apart.

Every chat-shaped route (OpenAI chat, Anthropic messages, OpenAI responses) reads the
model's text the same way: the reasoning block first (pyllama.chat.reasoning), then the
answer, out of which tool calls are parsed in the format the template implies. While
streaming, text that may still become a tag or a tool call is held back, so what a
client sees streamed always adds up to the final message. Each route only decides how
to frame the pieces (chunks, content blocks or response events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgi.errors import BadRequest
from asgi.responses import random_id
from pyllama.chat import ChatPrompt, ParsedOutput, parse_output
from pyllama.chat.reasoning import ReasoningStream, parse_format
from pyllama.chat.tool_calls import streamable_content
from pyllama.errors import InvalidRequestError


def reasoning_format(body: dict[str, Any], default: str) -> str:
    """The request's `reasoning_format`, or the server's; `auto` reads like `deepseek`."""
    value = body.get("reasoning_format", default)
    try:
        fmt = parse_format(value)
    except InvalidRequestError as exc:
        raise BadRequest(str(exc)) from None
    return "deepseek" if fmt == "auto" else fmt


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""


@dataclass
class Reply:
    reasoning: str
    content: str
    tool_calls: list[Any]


def _parse_calls(prompt: ChatPrompt, text: str) -> ParsedOutput:
    if not prompt.parse_tool_calls:
        return ParsedOutput(text, [])
    parsed = parse_output(text, prompt.format)
    for call in parsed.tool_calls:
        if not call.id:
            call.id = random_id()
    return parsed


class ReplyStream:
    """One choice's reply, fed with generated text; gives the deltas safe to show."""

    def __init__(self, prompt: ChatPrompt, fmt: str) -> None:
        self.prompt = prompt
        self.splitter = ReasoningStream(prompt.thinking_tags, started_open=prompt.thinking_open, fmt=fmt)
        self.reasoning = ""
        self.content = ""  # answer text so far (tool-call text included)
        self.shown = ""  # answer text already given out

    def _visible(self, piece: str) -> str:
        self.content += piece
        if not self.prompt.parse_tool_calls:
            self.shown += piece
            return piece
        visible = streamable_content(self.content, self.prompt.format)
        out = visible[len(self.shown):] if visible.startswith(self.shown) else ""
        self.shown += out
        return out

    def feed(self, text: str) -> Delta:
        r, c = self.splitter.feed(text)
        self.reasoning += r
        return Delta(r, self._visible(c))

    def finish(self, tail: str) -> tuple[Delta, Reply]:
        """The last delta (text held back until now) and the whole reply."""
        r1, c1 = self.splitter.feed(tail)
        r2, c2 = self.splitter.flush()
        self.reasoning += r1 + r2
        self.content += c1 + c2
        parsed = _parse_calls(self.prompt, self.content)
        content = parsed.content.rstrip() if parsed.tool_calls else parsed.content
        rest = content[len(self.shown):] if content.startswith(self.shown) else ""
        if not self.prompt.parse_tool_calls:
            rest = c1 + c2
            content = self.content
        self.shown += rest
        return Delta(r1 + r2, rest), Reply(self.reasoning, content, parsed.tool_calls)


def whole_reply(prompt: ChatPrompt, fmt: str, text: str) -> Reply:
    """A non-streamed reply, split the same way."""
    stream = ReplyStream(prompt, fmt)
    stream.feed(text)
    return stream.finish("")[1]
