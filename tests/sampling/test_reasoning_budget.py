"""The reasoning budget's state machine (llama.cpp's common/reasoning-budget.cpp) on
synthetic token ids, and inside the Sampler: the forced end wins over any logits."""

from __future__ import annotations

import numpy as np

from pyllama.sampling import Sampler, SamplingParams
from pyllama.sampling.reasoning_budget import (
    COUNTING,
    DONE,
    FORCING,
    IDLE,
    WAITING_UTF8,
    BudgetSpec,
    ReasoningBudget,
    utf8_is_complete,
)

START, END1, END2, MSG, A, B = (10, 11), (20, 21), (30,), 40, 50, 51


def spec(budget: int, prefill: tuple[int, ...] = ()) -> BudgetSpec:
    return BudgetSpec(budget=budget, start=(START,), end=(END1, END2), forced=(MSG, *END1), prefill=prefill)


def test_counts_after_the_start_tag_then_forces_message_and_end_tag() -> None:
    b = ReasoningBudget(spec(3))
    for t in (A, B, 10):
        b.accept(t)
        assert b.state == IDLE
    b.accept(11)
    assert b.state == COUNTING
    for t in (A, B):
        b.accept(t)
        assert b.forced_token() is None
    b.accept(A)  # the third thinking token: the budget is spent
    assert b.state == FORCING
    forced = []
    while b.forced_token() is not None:
        forced.append(b.forced_token())
        b.accept(forced[-1])  # type: ignore[arg-type]
    assert forced == [MSG, *END1] and b.state == DONE


def test_the_block_may_end_on_its_own_with_any_end_tag() -> None:
    b = ReasoningBudget(spec(5, prefill=START))
    assert b.state == COUNTING
    b.accept(A)
    b.accept(30)  # the second end tag
    assert b.state == DONE and b.forced_token() is None
    for _ in range(10):
        b.accept(A)
    assert b.forced_token() is None


def test_prefill_tokens_count_and_a_new_block_gets_a_fresh_budget() -> None:
    b = ReasoningBudget(spec(2, prefill=(*START, A)))  # the generation prompt opened it, and one more token
    assert b.state == COUNTING and b.remaining == 1
    b.accept(B)
    assert b.state == FORCING
    for t in (MSG, *END1):
        b.accept(t)
    assert b.state == DONE
    for t in START:
        b.accept(t)
    assert b.state == COUNTING and b.remaining == 2


def test_budget_zero_forces_right_after_the_start_tag() -> None:
    b = ReasoningBudget(spec(0))
    for t in START:
        b.accept(t)
    assert b.forced_token() == MSG


def test_waits_for_a_whole_utf8_character_before_forcing() -> None:
    pieces = [b""] * 60
    pieces[A] = "é".encode()[:1]  # the first byte of a two-byte character
    pieces[B] = "é".encode()[1:] + b"x"  # (llama.cpp looks at each piece alone: it must end whole)
    b = ReasoningBudget(spec(1, prefill=START), pieces)
    b.accept(A)
    assert b.state == WAITING_UTF8 and b.forced_token() is None
    b.accept(B)
    assert b.state == FORCING


def test_utf8_is_complete_matches_llama_cpp() -> None:
    assert utf8_is_complete(b"") and utf8_is_complete(b"abc") and utf8_is_complete("aé".encode())
    assert not utf8_is_complete("é".encode()[:1]) and not utf8_is_complete("€".encode()[:2])
    assert not utf8_is_complete(b"\x80")


def test_sampler_forces_the_end_whatever_the_logits() -> None:
    n_vocab = 64
    params = SamplingParams(seed=3, reasoning_budget=spec(2, prefill=START))
    sampler = Sampler(params, n_vocab)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(8):
        logits = rng.normal(size=n_vocab).astype(np.float32)
        logits[[MSG, *END1]] = -30.0  # the model would never choose them
        token = sampler.sample(logits)
        sampler.accept(token)
        out.append(token)
    assert out[2:5] == [MSG, *END1]
    assert MSG not in out[:2] + out[5:]
    sampler.reset()  # back to the state after the generation prompt
    assert sampler.budget is not None and sampler.budget.state == COUNTING and sampler.budget.remaining == 2


def test_force_ends_a_counted_block_only() -> None:
    """common_reasoning_budget_force (the control route's reasoning_end): a block being
    counted, even with no budget (-1), is forced to its end now; in any other state nothing happens."""
    b = ReasoningBudget(spec(-1))
    assert not b.force() and b.state == IDLE  # no block open yet
    for t in (*START, A, B):
        b.accept(t)
    assert b.state == COUNTING and b.force() and b.state == FORCING
    assert not b.force()  # already forcing
    forced = []
    while b.forced_token() is not None:
        forced.append(b.forced_token())
        b.accept(forced[-1])  # type: ignore[arg-type]
    assert forced == [MSG, *END1] and b.state == DONE
    assert not b.force() and b.state == DONE
