"""A model's chat template: turning a list of messages (and tools) into one prompt string.

The template is the model's own Jinja source when it has one, the text given with
`--chat-template` (a Jinja source or a built-in name such as `llama3`), and chatml when
there is nothing usable, which is what llama-server does. Templates differ in what they
can show (a system role, tools, tool calls, typed content); those capabilities are found
by rendering probe conversations once, and what a template cannot show is rewritten
into something it can (llama.cpp's "polyfills"), so every request renders.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pyllama.chat import builtin, jinja_env, reasoning, tool_calls
from pyllama.chat.messages import ChatMessage, to_template_dict
from pyllama.errors import InvalidRequestError

log = logging.getLogger(__name__)

CHATML_SOURCE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\n' -}}\n"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class TemplateCaps:
    """What a template can render, found by probing (llama.cpp's jinja::caps)."""

    supports_system_role: bool = True
    supports_tools: bool = False
    supports_tool_calls: bool = False
    supports_parallel_tool_calls: bool = False
    supports_string_content: bool = True
    supports_typed_content: bool = False
    supports_object_arguments: bool = False

    def to_json(self) -> dict[str, bool]:
        return dict(self.__dict__)


@dataclass
class ChatInputs:
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"  # "auto" | "none" | "required"
    parallel_tool_calls: bool = False
    add_generation_prompt: bool = True
    response_schema: dict[str, Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    now: float | None = None
    # A trailing assistant message is a prefill to continue (llama-server's default).
    prefill_assistant: bool = True
    enable_thinking: bool = True  # see pyllama.chat.reasoning


@dataclass
class ChatPrompt:
    prompt: str
    format: str = tool_calls.CONTENT_ONLY
    schema: dict[str, Any] | None = None  # JSON schema the reply must follow (tools or response_format)
    schema_prefix: str = ""
    generation_prompt: str = ""
    parse_tool_calls: bool = False
    thinking_tags: tuple[str, str] | None = None  # the template's reasoning markers
    thinking_open: bool = False  # the prompt opened the thinking block: the reply starts in it


def _add_system(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = dict(messages[0])
        first["content"] = first["content"] + "\n\n" + note
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


class ChatTemplate:
    """One resolved template: a Jinja source (with probed caps) or a built-in formatter."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        add_bos: bool = False,
        add_eos: bool = False,
    ) -> None:
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.builtin = builtin.builtin_name(source)
        self.source = source
        if self.builtin is None:
            jinja_env.compile_template(source)  # raises TemplateError with the reason
            self.caps = self._probe_caps()
        else:
            self.caps = TemplateCaps(supports_system_role=True)
        self.tool_format = tool_calls.detect_format(source) if self.builtin is None else tool_calls.GENERIC
        self.thinking = reasoning.thinking_tags(source) if self.builtin is None else None

    @classmethod
    def resolve(
        cls,
        model_template: str | None,
        override: str | None = None,
        *,
        bos_token: str = "",
        eos_token: str = "",
        add_bos: bool = False,
        add_eos: bool = False,
    ) -> ChatTemplate:
        """Pick the template llama-server would use; an unusable model template falls back."""
        def make(source: str) -> ChatTemplate:
            return cls(source, bos_token=bos_token, eos_token=eos_token, add_bos=add_bos, add_eos=add_eos)

        if override:
            return make(override)
        if not model_template:
            return make(CHATML_SOURCE)
        try:
            return make(model_template)
        except InvalidRequestError as exc:
            fallback = builtin.detect_builtin(model_template) or "chatml"
            log.warning("model chat template unusable (%s); using built-in '%s'", exc, fallback)
            return make(fallback)

    # -- probing -------------------------------------------------------------------------

    def _try(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        try:
            return self._render_raw(messages, add_generation_prompt=False, extra=extra)
        except Exception:  # a probe that fails just means "not supported"
            return ""

    def _probe_caps(self) -> TemplateCaps:
        user = {"role": "user", "content": "User message needle"}
        sys_out = self._try([{"role": "system", "content": "System needle"}, user])
        typed_out = self._try([{"role": "user", "content": [{"type": "text", "text": "Typed needle"}]}])
        string_out = self._try([user])
        tool = {"type": "function", "function": {"name": "tool_needle", "description": "d", "parameters": {}}}
        tools_out = self._try([user], tools=[tool])

        def call(name: str, args: Any) -> dict[str, Any]:
            return {"type": "function", "id": "call_1", "function": {"name": name, "arguments": args}}

        def with_calls(calls: list[dict[str, Any]]) -> str:
            return self._try([user, {"role": "assistant", "content": "", "tool_calls": calls}])

        str_args = with_calls([call("call_needle", '{"arg_needle": 1}')])
        obj_args = with_calls([call("call_needle", {"arg_needle": 1})])
        two = with_calls([call("call_needle", {"a": 1}), call("second_needle", {"b": 2})])
        return TemplateCaps(
            supports_system_role="System needle" in sys_out,
            supports_tools="tool_needle" in tools_out,
            supports_tool_calls="call_needle" in str_args or "call_needle" in obj_args,
            supports_parallel_tool_calls="second_needle" in two,
            supports_string_content="User message needle" in string_out,
            supports_typed_content="Typed needle" in typed_out and "Typed needle" not in string_out,
            supports_object_arguments="arg_needle" in obj_args and "arg_needle" not in str_args,
        )

    # -- rendering -----------------------------------------------------------------------

    def _render_raw(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool, extra: dict[str, Any]) -> str:
        context: dict[str, Any] = {
            "messages": messages,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
        }
        context.update(extra)
        return jinja_env.render(self.source, context)

    def _polyfill(self, inputs: ChatInputs, fmt: str) -> list[dict[str, Any]]:
        caps = self.caps
        messages = []
        for message in inputs.messages:
            msg = to_template_dict(
                message,
                typed_content=caps.supports_typed_content and not caps.supports_string_content,
                object_arguments=caps.supports_object_arguments,
            )
            if msg["role"] == "developer" and "<|channel|>" not in self.source:
                msg["role"] = "system"
            if msg.get("tool_calls") and not caps.supports_tool_calls:
                calls = [
                    {"name": c.name, "arguments": _loads_or_text(c.arguments), **({"id": c.id} if c.id else {})}
                    for c in message.tool_calls
                ]
                body: dict[str, Any] = {"tool_calls": calls}
                if message.text():
                    body["content"] = message.text()
                msg = {"role": "assistant", "content": json.dumps(body, indent=2, ensure_ascii=False)}
            elif msg["role"] == "tool" and not caps.supports_tool_calls:
                response: dict[str, Any] = {"content": msg.get("content")}
                for key, name in (("name", "tool"), ("tool_call_id", "tool_call_id")):
                    if msg.get(key):
                        response[name] = msg[key]
                msg = {"role": "user", "content": json.dumps({"tool_response": response}, indent=2, ensure_ascii=False)}
            messages.append(msg)
        use_tools = bool(inputs.tools) and inputs.tool_choice != "none"
        if use_tools and not caps.supports_tools:
            messages = _add_system(messages, tool_calls.tools_system_prompt(inputs.tools))
        if use_tools and fmt == tool_calls.GENERIC:
            messages = _add_system(messages, tool_calls.GENERIC_SYSTEM_NOTE)
        if not caps.supports_system_role:
            messages = _merge_system_into_user(messages)
        return messages

    def render(self, messages: list[dict[str, Any]], inputs: ChatInputs, *, add_generation_prompt: bool) -> str:
        """Render already-polyfilled template dicts to the prompt text."""
        if self.builtin is not None:
            turns = [(m["role"], _content_text(m.get("content"))) for m in messages]
            return builtin.apply_builtin(self.builtin, turns, add_generation_prompt)
        now = time.localtime(inputs.now) if inputs.now is not None else time.localtime()
        extra: dict[str, Any] = {
            "date_string": time.strftime("%d %b %Y", now),
            "datetime": time.strftime("%b %d %Y", now),
            "enable_thinking": inputs.enable_thinking,
        }
        if inputs.tools and inputs.tool_choice != "none" and self.caps.supports_tools:
            extra["tools"] = inputs.tools
        if "functools[" in self.source:  # firefunction v2 reads its tools as a JSON string (llama.cpp)
            offered = inputs.tools if inputs.tool_choice != "none" else []
            extra["functions"] = json.dumps(offered, indent=2, ensure_ascii=False) if offered else ""
        extra.update(inputs.kwargs)
        text = self._render_raw(messages, add_generation_prompt=add_generation_prompt, extra=extra)
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        if self.add_eos and self.eos_token and text.endswith(self.eos_token):
            text = text[: -len(self.eos_token)]
        return text

    def apply(self, inputs: ChatInputs) -> ChatPrompt:
        """The prompt for `inputs`, with the output constraint tools or response_format need."""
        use_tools = bool(inputs.tools) and inputs.tool_choice != "none"
        fmt = self.tool_format if use_tools else tool_calls.CONTENT_ONLY
        prefill = self._prefill(inputs)
        if prefill is not None:
            inputs = replace(inputs, messages=inputs.messages[:-1], add_generation_prompt=True)
        messages = self._polyfill(inputs, fmt)
        prompt = self.render(messages, inputs, add_generation_prompt=inputs.add_generation_prompt)
        if prefill is not None:
            prompt += prefill  # the reply continues the client's partial assistant message
        result = ChatPrompt(prompt=prompt, format=fmt, parse_tool_calls=use_tools)
        if use_tools:
            plan = tool_calls.plan_tools(
                fmt,
                inputs.tools,
                tool_choice=inputs.tool_choice,
                parallel=inputs.parallel_tool_calls,
                response_schema=inputs.response_schema,
            )
            result.schema, result.schema_prefix = plan.schema, plan.schema_prefix
        else:
            result.schema = inputs.response_schema
        if inputs.add_generation_prompt:
            without = self.render(messages, inputs, add_generation_prompt=False)
            result.generation_prompt = prompt[common_prefix_length(without, prompt):]
            if self.thinking is not None and prefill is None:
                if not inputs.enable_thinking:
                    closing = reasoning.close_thinking(prompt, result.generation_prompt, self.thinking)
                    result.prompt += closing
                    result.generation_prompt += closing
                result.thinking_open = reasoning.opens_thinking(result.generation_prompt, self.thinking)
        result.thinking_tags = self.thinking
        return result

    @staticmethod
    def _prefill(inputs: ChatInputs) -> str | None:
        """The text of a trailing assistant message to continue, if there is one."""
        msgs = inputs.messages
        if not (inputs.prefill_assistant and inputs.add_generation_prompt and msgs and msgs[-1].role == "assistant"):
            return None
        if len(msgs) >= 2 and msgs[-2].role == "assistant":
            raise InvalidRequestError("Cannot have 2 or more assistant messages at the end of the list.")
        if msgs[-1].tool_calls:
            raise InvalidRequestError("Cannot continue an assistant message that contains tool calls.")
        last = msgs[-1]
        if last.parts is not None:  # llama.cpp's render_content: text parts joined by a blank line
            return "\n\n".join(str(p.get("text", "")) for p in last.parts if p.get("type") == "text")
        return last.text()

    def example(self) -> str:
        """A short conversation rendered, for the startup log (as llama-server prints one)."""
        sample = [
            ChatMessage("system", "You are a helpful assistant"),
            ChatMessage("user", "Hello"),
            ChatMessage("assistant", "Hi there"),
            ChatMessage("user", "How are you?"),
        ]
        return self.apply(ChatInputs(messages=sample)).prompt


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _merge_system_into_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For templates without a system role: prepend system text to the next user turn."""
    out: list[dict[str, Any]] = []
    pending = ""
    for msg in messages:
        if msg.get("role") == "system":
            pending += ("\n" if pending else "") + _content_text(msg.get("content"))
            continue
        if pending and msg.get("role") == "user":
            msg = dict(msg)
            text = _content_text(msg.get("content"))
            msg["content"] = pending + ("\n" + text if text else "")
            pending = ""
        out.append(msg)
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by binary search over slice comparisons (done in
    C): a chat of 40 MB costs milliseconds, where a character loop took seconds."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo]; a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
