"""The reasoning budget's request side: which fields set it, and its token ids.

As llama-server (server-common.cpp, server-schema.cpp): a chat request on a template with
thinking tags gets `reasoning_budget_tokens` (the request's own, or `thinking_budget_tokens`,
or `--reasoning-budget`), the template's start and end tags, `reasoning_budget_message`
(or `--reasoning-budget-message`) and the generation prompt; /completion may send those
fields itself (`reasoning_budget_start_tag`, `reasoning_budget_end_tags` or
`reasoning_budget_end_tag`). The engine side is pyllama.sampling.reasoning_budget.

Where llama-server logs a wrong type and falls back to the default, this is a 400, the
project's rule for bad input.
"""

from __future__ import annotations

from typing import Any

from asgi.errors import BadRequest
from pyllama.chat.reasoning import ReasoningConfig
from pyllama.sampling.reasoning_budget import BudgetSpec

INT32_MAX = 2**31 - 1


def _budget(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise BadRequest(f"Field '{name}': expected an integer")
    if not -1 <= value <= INT32_MAX:
        raise BadRequest(f"Field '{name}': must be between -1 and {INT32_MAX} (got {int(value)})")
    return int(value)


def reasoning_control(body: dict[str, Any]) -> bool:
    """`reasoning_control`: the request may end its thinking block while it generates
    (POST /v1/chat/completions/control); the budget's state machine then runs even with no budget."""
    value = body.get("reasoning_control", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest("Field 'reasoning_control': expected a boolean")
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Field '{name}': expected a string")
    return value


def chat_budget_fields(body: dict[str, Any], config: ReasoningConfig, tags: tuple[str, str] | None,
                       generation_prompt: str) -> dict[str, Any]:
    """The completion fields a chat request adds for the budget (llama-server's llama_params)."""
    budget = _budget(body, "reasoning_budget_tokens")
    if budget is None:
        budget = _budget(body, "thinking_budget_tokens")
    if budget is None or budget == -1:
        budget = config.budget
    message = _text(body, "reasoning_budget_message")
    control = reasoning_control(body)
    if tags is None:
        return {}
    return {
        "reasoning_control": control,
        "reasoning_budget_tokens": budget,
        "reasoning_budget_start_tag": tags[0],
        "reasoning_budget_end_tags": [tags[1]],
        "reasoning_budget_message": config.budget_message if message is None else message,
        "generation_prompt": generation_prompt,
    }


def budget_spec(body: dict[str, Any], tokenizer: Any) -> BudgetSpec | None:
    """The budget a completion body asks for, in token ids; None when it sets none (no
    budget nor `reasoning_control`, or no tags to find the thinking block by)."""
    budget = _budget(body, "reasoning_budget_tokens")
    control = reasoning_control(body)
    start = _text(body, "reasoning_budget_start_tag")
    ends = body.get("reasoning_budget_end_tags")
    if ends is None:
        one = _text(body, "reasoning_budget_end_tag")
        ends = [one] if one is not None else []
    if not isinstance(ends, list) or not all(isinstance(e, str) for e in ends):
        raise BadRequest("Field 'reasoning_budget_end_tags': expected an array of strings")
    message = _text(body, "reasoning_budget_message") or ""
    generation_prompt = _text(body, "generation_prompt") or ""
    if ((budget is None or budget < 0) and not control) or not start or not any(ends):
        return None

    def tokens(text: str) -> tuple[int, ...]:
        return tuple(tokenizer.tokenize(text, False, True))

    end_seqs = tuple(tokens(e) for e in ends if e)
    forced = (tokens(message) if message else ()) + end_seqs[0]
    return BudgetSpec(budget=-1 if budget is None else budget, start=(tokens(start),), end=end_seqs, forced=forced,
                      prefill=prefill_tokens(generation_prompt, tokenizer))


def prefill_tokens(generation_prompt: str, tokenizer: Any) -> tuple[int, ...]:
    """The generation prompt's tokens, as common_sampler_init feeds them to the budget: a
    leading space some tokenizers add before a first special token is left out."""
    if not generation_prompt:
        return ()
    ids = tokenizer.tokenize(generation_prompt, False, True)
    out: list[int] = []
    for i, t in enumerate(ids):
        piece = tokenizer.token_to_piece(t, True)
        if i == 0 and piece[:1].isspace() and not generation_prompt[:1].isspace():
            continue
        out.append(t)
    return tuple(out)
