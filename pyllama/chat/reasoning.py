"""Reasoning ("thinking") models: when to let them think, and how to read their thoughts back.

Models such as DeepSeek R1, Qwen 3, QwQ and Command R7B write their chain of thought
between a pair of tags (`<think>`...`</think>`, `<|START_THINKING|>`...`<|END_THINKING|>`)
before the answer. llama-server lets a client choose:

- whether the model thinks (`--reasoning on|off|auto`, `chat_template_kwargs.enable_thinking`,
  `reasoning_effort: "none"`): the template gets `enable_thinking`, and when thinking is
  off but the template opened (or never mentions) the thinking block in the generation
  prompt, an empty block is closed for it, so the model goes straight to the answer;
- how the thoughts come back (`--reasoning-format` or the request's `reasoning_format`):
  `none` leaves them in `content`; `deepseek` (and `auto`) moves them to
  `reasoning_content`; `deepseek-legacy` fills `reasoning_content` and keeps the tagged
  text in `content` too.

The tags are found in the template source, the way llama.cpp's template analysis finds a
template's reasoning markers, for the families llama.cpp ships templates for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyllama.errors import InvalidRequestError

# (start, end) tag pairs, in the order they are looked for in a template's source.
THINKING_TAGS: tuple[tuple[str, str], ...] = (
    ("<|START_THINKING|>", "<|END_THINKING|>"),  # Command R7B
    ("<seed:think>", "</seed:think>"),  # Seed-OSS
    ("[THINK]", "[/THINK]"),  # Magistral
    ("<think>", "</think>"),  # DeepSeek R1, Qwen 3, QwQ, SmolLM3, GLM, ...
)
REASONING_MODES = ("on", "off", "auto")
REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")
_TRUE = {"on", "true", "1", "enabled", "yes"}
_FALSE = {"off", "false", "0", "disabled", "no"}


@dataclass(frozen=True)
class ReasoningConfig:
    """The server's reasoning flags (--reasoning, --reasoning-format, --reasoning-budget)."""

    mode: str = "auto"
    format: str = "auto"
    budget: int = -1
    budget_message: str = ""  # --reasoning-budget-message: written before the forced end tag


def parse_mode(value: str) -> str:
    word = value.strip().lower()
    if word in _TRUE:
        return "on"
    if word in _FALSE:
        return "off"
    if word == "auto":
        return "auto"
    raise ValueError(f"unknown value for --reasoning: '{value}' (expected on, off or auto)")


def parse_format(value: Any) -> str:
    if value == "nothink":  # an old spelling some clients still send
        return "none"
    if not isinstance(value, str) or value not in REASONING_FORMATS:
        raise InvalidRequestError(f"Unknown reasoning format: {value}")
    return value


def thinking_tags(source: str) -> tuple[str, str] | None:
    """The thinking tags a template uses, or None if it has no thinking block."""
    for start, end in THINKING_TAGS:
        if start in source and end in source:
            return start, end
    return None


def enable_thinking(config: ReasoningConfig, supports: bool, body: dict[str, Any], kwargs: dict[str, Any]) -> bool:
    """Whether this request lets the model think (llama-server's precedence: flag, then the
    request's chat_template_kwargs.enable_thinking, then reasoning_effort "none")."""
    enabled = config.mode == "on" or (config.mode == "auto" and supports)
    if config.budget == 0:
        enabled = False
    value = kwargs.get("enable_thinking")
    if isinstance(value, bool):
        enabled = value
    elif value is not None:
        raise InvalidRequestError('invalid type for "enable_thinking" (expected boolean, got string)')
    effort = body.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise InvalidRequestError('"reasoning_effort" must be a string')
    if effort == "none":
        enabled = False
    return enabled


def close_thinking(prompt: str, generation_prompt: str, tags: tuple[str, str]) -> str:
    """What to append to a prompt whose thinking is off, so the reply starts with the answer.

    A generation prompt that opens the block (`<think>\\n`) gets the end tag; one that already
    holds an empty block (Qwen 3 with enable_thinking=false) gets nothing; one that does not
    mention the block (Command R7B) gets an empty block."""
    start, end = tags
    if end in generation_prompt or prompt.rstrip().endswith(end):
        return ""
    if generation_prompt.rstrip().endswith(start):
        return end
    return start + end


def opens_thinking(generation_prompt: str, tags: tuple[str, str] | None) -> bool:
    """True when the prompt itself opened the thinking block: the reply starts inside it."""
    return tags is not None and generation_prompt.rstrip().endswith(tags[0])


@dataclass
class SplitReply:
    reasoning: str
    content: str


def split_reasoning(text: str, tags: tuple[str, str] | None, *, started_open: bool, fmt: str) -> SplitReply:
    """A whole reply split into its reasoning and its answer (non-streamed responses)."""
    stream = ReasoningStream(tags, started_open=started_open, fmt=fmt)
    r1, c1 = stream.feed(text)
    r2, c2 = stream.flush()
    return SplitReply(r1 + r2, c1 + c2)


class ReasoningStream:
    """Splits generated text, piece by piece, into reasoning and content deltas.

    Text that may still turn out to be a tag (or whitespace around one) is held back
    until the next piece decides it; `flush` releases the rest at the end. An unclosed
    block (the budget ran out mid-thought) is all reasoning, as in llama.cpp."""

    def __init__(self, tags: tuple[str, str] | None, *, started_open: bool, fmt: str) -> None:
        self.tags = tags
        self.fmt = fmt
        active = tags is not None and fmt != "none"
        self.state = ("reasoning" if started_open else "start") if active else "content"
        self.legacy = fmt == "deepseek-legacy"
        self.buf = ""
        self.reasoning = ""  # everything emitted as reasoning so far

    def feed(self, piece: str) -> tuple[str, str]:
        if self.state == "content":
            return "", piece
        self.buf += piece
        reasoning, content = "", ""
        while True:
            before = (self.state, len(self.buf))
            r, c = self._step()
            reasoning += r
            content += c
            if (self.state, len(self.buf)) == before:
                return reasoning, content

    def _step(self) -> tuple[str, str]:
        assert self.tags is not None or self.state == "content"
        if self.state == "content":
            out, self.buf = self.buf, ""
            return "", out
        start, end = self.tags if self.tags is not None else ("", "")
        if self.state == "start":
            stripped = self.buf.lstrip()
            if stripped.startswith(start):
                self.state = "reasoning"
                raw = self.buf[: len(self.buf) - len(stripped) + len(start)]
                self.buf = stripped[len(start):]
                return "", raw if self.legacy else ""
            if start.startswith(stripped):
                return "", ""  # wait: could still be the start tag
            self.state = "content"
            return "", ""
        if self.state == "reasoning":
            if not self.reasoning:
                self.buf = self.buf.lstrip()
            at = self.buf.find(end)
            if at >= 0:
                thought = self.buf[:at].rstrip()
                raw = self.buf[: at + len(end)]
                self.buf = self.buf[at + len(end):]
                self.state = "after"
                self.reasoning += thought
                return thought, raw if self.legacy else ""
            keep = _held_back(self.buf, end)
            thought, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep:]
            self.reasoning += thought
            return thought, thought if self.legacy else ""
        # after the end tag: drop the whitespace before the answer
        stripped = self.buf.lstrip()
        if stripped:
            self.state = "content"
            self.buf = stripped
            return "", ""
        if self.legacy:
            out, self.buf = self.buf, ""
            return "", out
        self.buf = ""
        return "", ""

    def flush(self) -> tuple[str, str]:
        rest, self.buf = self.buf, ""
        if self.state == "reasoning":
            thought = rest.rstrip()
            if not self.reasoning:
                thought = thought.lstrip()
            self.reasoning += thought
            return thought, thought if self.legacy else ""
        if self.state in ("start", "content"):
            return "", rest
        return "", ""


def _held_back(buf: str, end: str) -> int:
    """How many trailing characters to hold: trailing whitespace plus any prefix of `end`."""
    keep = 0
    for n in range(min(len(end) - 1, len(buf)), 0, -1):
        if end.startswith(buf[-n:]):
            keep = n
            break
    body = buf[: len(buf) - keep]
    return keep + (len(body) - len(body.rstrip()))
