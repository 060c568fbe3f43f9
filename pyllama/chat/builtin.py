"""llama.cpp's built-in named chat templates (`llama_chat_apply_template`, src/llama-chat.cpp).

These are plain string formatters, not Jinja: `--chat-template llama2` selects one by
name, and a model whose Jinja template cannot be used falls back to the formatter its
template text looks like (`detect_builtin`), or to chatml. Each formatter takes
(role, content) pairs and `add_generation_prompt`, exactly as the C++ code does,
including its quirks (trimming, where a system prompt goes when the format has none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Turn = tuple[str, str]
Formatter = Callable[[Sequence[Turn], bool], str]


def _strip(text: str) -> str:
    # C's isspace set, as llama-chat.cpp's trim() uses.
    return text.strip(" \t\n\r\v\f")


def _chatml(chat: Sequence[Turn], add_ass: bool) -> str:
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in chat)
    return out + ("<|im_start|>assistant\n" if add_ass else "")


def _mistral_v7(tekken: bool) -> Formatter:
    space = "" if tekken else " "

    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"[SYSTEM_PROMPT]{space}{content}[/SYSTEM_PROMPT]")
            elif role == "user":
                out.append(f"[INST]{space}{content}[/INST]")
            else:
                out.append(f"{space}{content}</s>")
        return "".join(out)

    return fmt


def _mistral_v1_v3(variant: str) -> Formatter:
    leading = " " if variant == "v1" else ""
    trailing = "" if variant == "v3-tekken" else " "
    trim_assistant = variant == "v3"

    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = []
        inside = False
        for role, content in chat:
            if not inside:
                out.append(f"{leading}[INST]{trailing}")
                inside = True
            if role == "system":
                out.append(content + "\n\n")
            elif role == "user":
                out.append(f"{content}{leading}[/INST]")
            else:
                out.append(f"{trailing}{_strip(content) if trim_assistant else content}</s>")
                inside = False
        return "".join(out)

    return fmt


def _llama2(system: bool, bos_inside: bool, strip: bool) -> Formatter:
    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = ["[INST] "]
        inside = True  # the BOS at the very start comes from the tokenizer
        for role, raw in chat:
            content = _strip(raw) if strip else raw
            if not inside:
                inside = True
                out.append("<s>[INST] " if bos_inside else "[INST] ")
            if role == "system":
                out.append(f"<<SYS>>\n{content}\n<</SYS>>\n\n" if system else content + "\n")
            elif role == "user":
                out.append(f"{content} [/INST]")
            else:
                out.append(f"{content}</s>")
                inside = False
        return "".join(out)

    return fmt


def _tagged(open_tag: str, close: str, assistant: str) -> Formatter:
    """Formats of the shape <|role|>\\n content <close>, e.g. phi3 and zephyr."""

    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = "".join(f"{open_tag.format(role=role)}{content}{close}" for role, content in chat)
        return out + (assistant if add_ass else "")

    return fmt


def _gemma(chat: Sequence[Turn], add_ass: bool) -> str:
    out = []
    system = ""
    for role, content in chat:
        if role == "system":
            system += _strip(content)
            continue
        role = "model" if role == "assistant" else role
        out.append(f"<start_of_turn>{role}\n")
        if system and role != "model":
            out.append(system + "\n\n")
            system = ""
        out.append(_strip(content) + "<end_of_turn>\n")
    if add_ass:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def _vicuna(orca: bool) -> Formatter:
    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"SYSTEM: {content}\n" if orca else content + "\n\n")
            elif role == "user":
                out.append(f"USER: {content}\n")
            elif role == "assistant":
                out.append(f"ASSISTANT: {content}</s>\n")
        return "".join(out) + ("ASSISTANT:" if add_ass else "")

    return fmt


def _deepseek(chat: Sequence[Turn], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content)
        elif role == "user":
            out.append(f"### Instruction:\n{content}\n")
        elif role == "assistant":
            out.append(f"### Response:\n{content}\n<|EOT|>\n")
    return "".join(out) + ("### Response:\n" if add_ass else "")


def _deepseek2(chat: Sequence[Turn], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content + "\n\n")
        elif role == "user":
            out.append(f"User: {content}\n\n")
        elif role == "assistant":
            out.append(f"Assistant: {content}<｜end▁of▁sentence｜>")
    return "".join(out) + ("Assistant:" if add_ass else "")


def _deepseek3(chat: Sequence[Turn], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content + "\n\n")
        elif role == "user":
            out.append(f"<｜User｜>{content}")
        elif role == "assistant":
            out.append(f"<｜Assistant｜>{content}<｜end▁of▁sentence｜>")
    return "".join(out) + ("<｜Assistant｜>" if add_ass else "")


def _command_r(chat: Sequence[Turn], add_ass: bool) -> str:
    tokens = {"system": "<|SYSTEM_TOKEN|>", "user": "<|USER_TOKEN|>", "assistant": "<|CHATBOT_TOKEN|>"}
    out = [
        f"<|START_OF_TURN_TOKEN|>{tokens[role]}{_strip(content)}<|END_OF_TURN_TOKEN|>"
        for role, content in chat
        if role in tokens
    ]
    return "".join(out) + ("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>" if add_ass else "")


def _header(start: str, end: str, eot: str) -> Formatter:
    """Llama 3 / Llama 4: a role header, a blank line, the trimmed content, an end-of-turn."""

    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        out = "".join(f"{start}{role}{end}\n\n{_strip(content)}{eot}" for role, content in chat)
        return out + (f"{start}assistant{end}\n\n" if add_ass else "")

    return fmt


def _openchat(chat: Sequence[Turn], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"{content}<|end_of_turn|>")
        else:
            out.append(f"GPT4 Correct {role[:1].upper()}{role[1:]}: {content}<|end_of_turn|>")
    return "".join(out) + ("GPT4 Correct Assistant:" if add_ass else "")


def _monarch(chat: Sequence[Turn], add_ass: bool) -> str:
    out = "".join(f"{'' if i == 0 else '<s>'}{role}\n{content}</s>\n" for i, (role, content) in enumerate(chat))
    return out + ("<s>assistant\n" if add_ass else "")


def _chatglm(version: int) -> Formatter:
    def fmt(chat: Sequence[Turn], add_ass: bool) -> str:
        if version == 3:
            body = "".join(f"<|{role}|>\n {content}" for role, content in chat)
            return "[gMASK]sop" + body + ("<|assistant|>" if add_ass else "")
        body = "".join(f"<|{role}|>\n{content}" for role, content in chat)
        return "[gMASK]<sop>" + body + ("<|assistant|>\n" if add_ass else "")

    return fmt


def _minicpm(chat: Sequence[Turn], add_ass: bool) -> str:
    return "".join(f"<用户>{_strip(c)}<AI>" if r == "user" else _strip(c) for r, c in chat)


BUILTIN_TEMPLATES: dict[str, Formatter] = {
    "chatml": _chatml,
    "llama2": _llama2(system=False, bos_inside=False, strip=False),
    "llama2-sys": _llama2(system=True, bos_inside=False, strip=False),
    "llama2-sys-bos": _llama2(system=True, bos_inside=True, strip=False),
    "llama2-sys-strip": _llama2(system=True, bos_inside=False, strip=True),
    "mistral-v1": _mistral_v1_v3("v1"),
    "mistral-v3": _mistral_v1_v3("v3"),
    "mistral-v3-tekken": _mistral_v1_v3("v3-tekken"),
    "mistral-v7": _mistral_v7(tekken=False),
    "mistral-v7-tekken": _mistral_v7(tekken=True),
    "phi3": _tagged("<|{role}|>\n", "<|end|>\n", "<|assistant|>\n"),
    "phi4": _tagged("<|im_start|>{role}<|im_sep|>", "<|im_end|>", "<|im_start|>assistant<|im_sep|>"),
    "falcon3": _tagged("<|{role}|>\n", "\n", "<|assistant|>\n"),
    "zephyr": _tagged("<|{role}|>\n", "<|endoftext|>\n", "<|assistant|>\n"),
    "monarch": _monarch,
    "gemma": _gemma,
    "openchat": _openchat,
    "vicuna": _vicuna(orca=False),
    "vicuna-orca": _vicuna(orca=True),
    "deepseek": _deepseek,
    "deepseek2": _deepseek2,
    "deepseek3": _deepseek3,
    "command-r": _command_r,
    "llama3": _header("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "llama4": _header("<|header_start|>", "<|header_end|>", "<|eot|>"),
    "chatglm3": _chatglm(3),
    "chatglm4": _chatglm(4),
    "minicpm": _minicpm,
}

# Names llama-cpp-python's `chat_format` uses for the same formats (its config files use them).
ALIASES = {
    "llama-2": "llama2",
    "llama-3": "llama3",
    "mistral-instruct": "mistral-v1",
    "mistral": "mistral-v1",
    "phi-3": "phi3",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "command_r": "command-r",
}


def builtin_name(name: str) -> str | None:
    """The canonical built-in name for `name` (or an alias of it), else None."""
    name = ALIASES.get(name, name)
    return name if name in BUILTIN_TEMPLATES else None


def detect_builtin(source: str) -> str | None:
    """Which built-in format a Jinja template's text looks like (llm_chat_detect_template)."""

    def has(*needles: str) -> bool:
        return all(n in source for n in needles)

    checks: list[tuple[bool, str]] = [
        (has("<|im_start|>", "<|im_sep|>"), "phi4"),
        (has("<|im_start|>"), "chatml"),
    ]
    for matched, name in checks:
        if matched:
            return name
    if source.startswith("mistral") or has("[INST]"):
        if has("[SYSTEM_PROMPT]"):
            return "mistral-v7"
        if has("' [INST] ' + system_message") or has("[AVAILABLE_TOOLS]"):
            if has(" [INST]"):
                return "mistral-v1"
            return "mistral-v3-tekken" if has('"[INST]"') else "mistral-v3"
        if has("content.strip()"):
            return "llama2-sys-strip"
        if has("bos_token + '[INST]"):
            return "llama2-sys-bos"
        return "llama2-sys" if has("<<SYS>>") else "llama2"
    ordered: list[tuple[tuple[str, ...], str]] = [
        (("<|assistant|>", "<|end|>"), "phi3"),
        (("[gMASK]<sop>",), "chatglm4"),
        (("<|assistant|>", "<|user|>", "</s>"), "falcon3"),
        (("<|user|>", "<|endoftext|>"), "zephyr"),
        (("bos_token + message['role']",), "monarch"),
        (("<start_of_turn>",), "gemma"),
        (("GPT4 Correct ",), "openchat"),
        (("USER: ", "ASSISTANT: ", "SYSTEM: "), "vicuna-orca"),
        (("USER: ", "ASSISTANT: "), "vicuna"),
        (("### Instruction:", "<|EOT|>"), "deepseek"),
        (("<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"), "command-r"),
        (("<|start_header_id|>", "<|end_header_id|>"), "llama3"),
        (("[gMASK]sop",), "chatglm3"),
        (("<用户>",), "minicpm"),
        (("'Assistant: ' + message['content'] + eos_token",), "deepseek2"),
        (("<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>"), "deepseek3"),
        (("<|header_start|>", "<|header_end|>"), "llama4"),
    ]
    for needles, name in ordered:
        if has(*needles):
            return name
    return None


def apply_builtin(name: str, chat: Sequence[Turn], add_generation_prompt: bool) -> str:
    """Format `chat` with the built-in template `name` (which must be a known name)."""
    return BUILTIN_TEMPLATES[name](chat, add_generation_prompt)
