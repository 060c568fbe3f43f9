"""Prompt shapes llama-server accepts, turned into token lists (server-common.cpp).

A prompt is a string, a list of token ids, a mix of both (`[12, "text", 34]`), an object
`{"prompt_string": ...}`, or a list of any of those meaning several prompts. BOS is
added only where a string starts the prompt. /infill builds its prompt from the model's
FIM tokens in the repo-level pattern llama-server uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from asgi.errors import BadRequest, ContextExceeded, NotSupported
from asgi.json_text import dumps
from asgi.params import check_prompt_count

T = TypeVar("T")
# The tokenizer runs at ~6 MB/s here (`pyllama bench --tokenizer`): a prompt of more than
# this many characters is tokenized on a worker thread, so a long one does not hold up
# the event loop (other clients' streams) for tens of milliseconds.
OFF_LOOP_CHARS = 32 << 10


def text_size(prompt: Any) -> int:
    """Characters of text in a prompt of any accepted shape (token ids count as none)."""
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(text_size(p) for p in prompt)
    if isinstance(prompt, dict):
        return text_size(prompt.get("prompt_string"))
    return 0


# At most this many large preparations (templates, tokenization, body parsing) run at once
# on worker threads; more wait their turn, so a burst of huge bodies cannot take every thread.
MAX_OFF_LOOP = 2
_off_loop_gate: asyncio.Semaphore | None = None


async def tokenize_off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) here if its input is small (`size` characters or bytes), else on a worker
    thread, at most MAX_OFF_LOOP at a time (errors propagate). The event loop stays free for
    /health and other clients' streams while a large chat is templated or tokenized."""
    global _off_loop_gate
    if size < OFF_LOOP_CHARS:
        return fn(*args)
    if _off_loop_gate is None:
        _off_loop_gate = asyncio.Semaphore(MAX_OFF_LOOP)
    async with _off_loop_gate:
        return await asyncio.to_thread(fn, *args)


class TokenizerLike(Protocol):
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]: ...


def check_text_fits(text: str, n_ctx: int, max_piece_bytes: int) -> None:
    """Refuse, before tokenizing it, a prompt text too long for any tokenization to fit the
    context (every token covers at most max_piece_bytes bytes): a huge body costs nothing."""
    if max_piece_bytes > 0 and len(text) > n_ctx * max_piece_bytes:  # characters <= UTF-8 bytes: a safe bound
        raise ContextExceeded(
            f"the request ({len(text)} characters) exceeds the available context size ({n_ctx} tokens), "
            "try increasing it",
            n_ctx=n_ctx,
        )


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"Field '{name}': type must be boolean")
    return value


def _piece_json(piece: bytes) -> str | list[int]:
    """A piece as text when it is whole UTF-8, else as its byte values (llama-server)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def tokenize_job(tok: Any, body: dict[str, Any]) -> tuple[int, Callable[[], str]]:
    """/tokenize: the body's fields checked now, and the costly part (tokenization and the
    answer's JSON text) as a function, with the size of its input in characters."""
    if "content" not in body:
        return 0, lambda: dumps({"tokens": []})
    content = body["content"]
    add_special = _flag(body, "add_special", False)
    parse_special = _flag(body, "parse_special", True)
    with_pieces = _flag(body, "with_pieces", False)
    if not isinstance(content, str | list):
        raise BadRequest("Field 'content': must be a string or an array of strings and token ids")

    def run() -> str:
        tokens = tokenize_mixed(tok, content, add_special, parse_special)
        if not with_pieces:
            return dumps({"tokens": tokens})
        return dumps({"tokens": [{"id": t, "piece": _piece_json(tok.token_to_piece(t, True))} for t in tokens]})

    return text_size(content) + (len(content) if isinstance(content, list) else 0), run


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def tokenize_mixed(tok: TokenizerLike, prompt: Any, add_special: bool, parse_special: bool) -> list[int]:
    """A string, or a list of strings and token ids; only a leading string gets BOS."""
    if isinstance(prompt, str):
        return list(tok.tokenize(prompt, add_special, parse_special))
    if not isinstance(prompt, list):
        raise BadRequest(f'"prompt" must be a string or an array, not {type(prompt).__name__}')
    tokens: list[int] = []
    first = True
    for part in prompt:
        if isinstance(part, str):
            tokens.extend(tok.tokenize(part, add_special and first, parse_special))
        elif _is_token(part):
            tokens.append(part)
        else:
            raise BadRequest("prompt arrays may only hold strings and integer token ids")
        first = False
    return tokens


def _content_text(parts: Any) -> str:
    """`{"content": [{"type": "text", "text": ...}, ...]}`: the parts' text, joined as llama-server
    joins them; media parts need a multimodal model, which this server does not load."""
    if not isinstance(parts, list) or not parts:
        raise BadRequest('"content" must be a non-empty array of content parts')
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_audio", "input_video", "input_image"):
            raise BadRequest("Multimodal data provided, but model does not support multimodal requests.")
        else:
            raise BadRequest(f"unsupported content part type: {kind!r} (expected 'text')")
    return "".join(texts)


def _subprompt(tok: TokenizerLike, prompt: Any, add_special: bool, parse_special: bool) -> list[int]:
    if isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) or _is_token(p) for p in prompt)):
        return tokenize_mixed(tok, prompt, add_special, parse_special)
    if isinstance(prompt, dict) and "prompt_string" in prompt:
        if prompt.get("multimodal_data"):
            raise BadRequest("Multimodal data provided, but model does not support multimodal requests.")
        return tokenize_mixed(tok, prompt["prompt_string"], add_special, parse_special)
    if isinstance(prompt, dict) and "content" in prompt:
        return tokenize_mixed(tok, _content_text(prompt["content"]), add_special, parse_special)
    raise BadRequest(
        '"prompt" elements must be a string, a list of tokens, a JSON object containing a prompt string, '
        "or a list of mixed strings & tokens."
    )


def tokenize_prompts(tok: TokenizerLike, prompt: Any, add_special: bool = True, parse_special: bool = True) -> list[list[int]]:
    """One token list per prompt (a list without any token ids is several prompts)."""
    if prompt is None:
        raise BadRequest('"prompt" is required')
    if isinstance(prompt, list) and not any(_is_token(p) for p in prompt):
        if not prompt:
            raise BadRequest('"prompt" must not be empty')
        return [_subprompt(tok, p, add_special, parse_special) for p in prompt]
    return [_subprompt(tok, prompt, add_special, parse_special)]


def completion_prompts(tok: Any, prompt: Any, limits: Any, system: str,
                       fits: Callable[[str], None]) -> Callable[[], list[list[int]]]:
    """/completion's prompts: the cheap checks now (how many prompts, each text against the
    context), the tokenization (with the --system-prompt-file text in front) as a function."""
    check_prompt_count(prompt, limits)
    for text in [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []:
        if isinstance(text, str):
            fits(text)

    def run() -> list[list[int]]:
        if system:
            head = tok.tokenize(system, True, True)
            return [head + p for p in tokenize_prompts(tok, prompt, add_special=False)]
        return tokenize_prompts(tok, prompt)

    return run


def check_token_ids(tokens: list[int], n_vocab: int) -> None:
    for t in tokens:
        if not 0 <= t < n_vocab:
            raise BadRequest(f"token id {t} is out of range for this model's vocabulary (0..{n_vocab - 1})")


def infill_checks(tok: Any, body: dict[str, Any]) -> list[dict[str, str]]:
    """/infill's checks of the model's FIM tokens and of the body (llama-server's order);
    the body's `input_extra` chunks."""
    missing = [name for name, tid in (("prefix", tok.fim_pre_id), ("suffix", tok.fim_suf_id), ("middle", tok.fim_mid_id))
               if tid is None]
    if missing:
        reasons = " ".join(f"{m} token is missing." for m in missing)
        raise NotSupported(f"Infill is not supported by this model: {reasons}")
    if "prompt" in body and not isinstance(body["prompt"], str):
        raise BadRequest('"prompt" must be a string')
    for name in ("input_prefix", "input_suffix"):
        if name not in body:
            raise BadRequest(f'"{name}" is required')
        if not isinstance(body[name], str | list):
            raise BadRequest(f'"{name}" must be a string')
    extra = body.get("input_extra", [])
    if not isinstance(extra, list):
        raise BadRequest('"input_extra" must be an array of {"filename": string, "text": string}')
    for chunk in extra:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise BadRequest('extra_context chunk must contain a "text" field with a string value')
        if "filename" in chunk and not isinstance(chunk["filename"], str):
            raise BadRequest("extra_context chunk's \"filename\" field must be a string")
    return extra


def infill_parts(tok: Any, input_prefix: Any, input_suffix: Any,
                 input_extra: list[dict[str, str]]) -> tuple[list[int], list[int], list[int]]:
    """The costly half of format_infill (tokenizing): prefix, suffix and extra context tokens."""
    prefix = tokenize_mixed(tok, input_prefix, False, False)
    suffix = tokenize_mixed(tok, input_suffix, False, False)
    extra: list[int] = []
    if tok.fim_rep_id is not None:
        extra += [tok.fim_rep_id, *tok.tokenize("myproject\n", False, False)]
    for chunk in input_extra:
        text, filename = chunk.get("text", ""), chunk.get("filename", "tmp")
        if tok.fim_sep_id is not None:
            extra += [tok.fim_sep_id, *tok.tokenize(filename + "\n", False, False)]
        else:
            extra += tok.tokenize("\n\n--- snippet ---\n\n", False, False)
        extra += tok.tokenize(text, False, False)
    if tok.fim_sep_id is not None:
        extra += [tok.fim_sep_id, *tok.tokenize("filename\n", False, False)]
    return prefix, suffix, extra


def assemble_infill(tok: Any, parts: tuple[list[int], list[int], list[int]], prompt_tokens: list[int], *,
                    n_batch: int, n_predict: int, n_ctx: int, spm_infill: bool = False) -> list[int]:
    """The cheap half of format_infill: the parts cut to the batch and context, in FIM order."""
    prefix, suffix, extra = parts
    n_prefix_take = min(len(prefix), 3 * (n_batch // 4))
    n_suffix_take = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt_tokens))))
    n_extra_take = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra))
    prefix = [tok.fim_pre_id, *prefix[len(prefix) - n_prefix_take :], *prompt_tokens]
    suffix = [tok.fim_suf_id, *suffix[:n_suffix_take]]
    first, second = (suffix, prefix) if spm_infill else (prefix, suffix)
    if tok.add_bos and tok.bos_id is not None:
        first = [tok.bos_id, *first]
    head = extra[len(extra) - n_extra_take :] if n_extra_take else []
    return [*head, *first, *second, tok.fim_mid_id]


def format_infill(
    tok: Any,
    *,
    input_prefix: Any,
    input_suffix: Any,
    input_extra: list[dict[str, str]],
    prompt_tokens: list[int],
    n_batch: int,
    n_predict: int,
    n_ctx: int,
    spm_infill: bool = False,
) -> list[int]:
    """llama-server's format_prompt_infill: [extra context] FIM_PRE prefix FIM_SUF suffix FIM_MID prompt."""
    parts = infill_parts(tok, input_prefix, input_suffix, input_extra)
    return assemble_infill(tok, parts, prompt_tokens, n_batch=n_batch, n_predict=n_predict, n_ctx=n_ctx,
                           spm_infill=spm_infill)
