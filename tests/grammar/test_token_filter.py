"""Allowed-token masks: the vectorized walk against a direct port of llama.cpp's per-token check."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pyllama.grammar import builtin_grammar
from pyllama.grammar.constraint import GrammarConstraint, compile_grammar
from pyllama.grammar.matcher import CompiledGrammar, Stack
from pyllama.grammar.parser import TOKEN, TOKEN_NOT, GrammarError
from pyllama.grammar.utf8 import NO_PARTIAL, Partial, decode_utf8


def reference_allowed(g: CompiledGrammar, stacks: list[Stack], partial: Partial, pieces: list[bytes], eog: frozenset[int]) -> set[int]:
    """llama_grammar_apply_impl + llama_grammar_reject_candidates, one token at a time."""

    def survives(stack: Stack, token: int, cps: list[int], tail: Partial) -> bool:
        if not stack:
            return not cps and tail.n_remain == 0
        top = stack[-1]
        kind, value = g.elems[top]
        if kind in (TOKEN, TOKEN_NOT):
            if not cps:
                return tail.n_remain == 0
            return (kind == TOKEN) == (value == token)
        cls = g.classes[top]
        if not cps:
            return tail.n_remain == 0 or cls.matches_partial(tail)
        if not cls.matches(cps[0]):
            return False
        return any(survives(s, token, cps[1:], tail) for s in g.successors(stack))

    allowed = set()
    for t, piece in enumerate(pieces):
        if t in eog:
            if () in stacks:
                allowed.add(t)
            continue
        if not piece or piece[0] == 0:
            continue
        cps, tail = decode_utf8(piece, partial)
        if any(survives(s, t, cps, tail) for s in stacks):
            allowed.add(t)
    return allowed


ALPHABET = ["a", "b", "{", "}", '"', ":", ",", " ", "1", "0", ".", "-", "\n", "é", "日", "本", "🙂", "\\", "[", "]"]


def synthetic_vocab(seed: int, n: int = 400) -> list[bytes]:
    rng = random.Random(seed)
    pieces = [b"", b"\x00x"]
    for ch in ALPHABET:
        pieces.append(ch.encode())
        raw = ch.encode()
        if len(raw) > 1:  # byte-level fragments of multi-byte characters
            pieces += [raw[:1], raw[1:], raw[:2], raw[2:]]
    while len(pieces) < n:
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6)))
        raw = s.encode()
        cut = rng.random()
        if cut < 0.15:
            raw = raw[: rng.randint(1, len(raw))]
        elif cut < 0.2:
            raw = raw[rng.randint(0, len(raw) - 1) :]
        pieces.append(raw)
    return pieces


GRAMMARS = {
    "json": builtin_grammar("json"),
    "japanese": builtin_grammar("japanese"),
    "classes": 'root ::= ([^"a] | "a" [b-z]{1,3} | [日-本] "🙂"?)+ "}"',
    "tokens": 'root ::= <[5]> ("a" | !<[6]>)* <[6]>',
}


@pytest.mark.parametrize("name", list(GRAMMARS))
@pytest.mark.parametrize("seed", [0, 1])
def test_masks_match_reference_along_random_paths(name: str, seed: int) -> None:
    pieces = synthetic_vocab(seed)
    eog = frozenset({2})
    gc = GrammarConstraint.from_text(GRAMMARS[name], pieces, eog)
    g = gc.grammar
    rng = random.Random(seed)
    for _ in range(12):
        mask = gc.allowed_mask()
        expected = reference_allowed(g, list(g.state_stacks[gc.state]), gc.partial, pieces, eog)
        assert set(np.flatnonzero(mask).tolist()) == expected
        for t in rng.sample(range(len(pieces)), 40):  # the single-token check agrees with the mask
            fresh = GrammarConstraint.from_text(GRAMMARS[name], pieces, eog)
            fresh.state, fresh.partial = gc.state, gc.partial
            assert fresh.filter.token_allowed(gc.state, gc.partial, t) == (t in expected)
        choices = sorted(expected - eog)
        if not choices:
            break
        gc.accept(rng.choice(choices))


def test_partial_utf8_across_tokens() -> None:
    pieces = [b"", b"\xe6", b"\x97", b"\xa5", b"\xe6\x97", b"x", "日".encode(), "本".encode(), b"\xa5x"]
    gc = GrammarConstraint.from_text('root ::= "日"+ "x"', pieces, frozenset())
    allowed = set(np.flatnonzero(gc.allowed_mask()).tolist())
    assert allowed == {1, 4, 6}  # the lead byte and lead+1 can still complete to 日; 本 cannot
    gc.accept(4)  # b"\xe6\x97": two of three bytes
    assert gc.partial.n_remain == 1
    allowed = set(np.flatnonzero(gc.allowed_mask()).tolist())
    assert allowed == {3, 8}  # only a continuation byte finishing 日 (optionally followed by x)
    gc.accept(8)
    assert gc.is_complete()


def test_eog_only_when_complete_and_accepting_eog() -> None:
    pieces = [b"a", b"b", b"</s>"]
    gc = GrammarConstraint.from_text('root ::= "a" "b"?', pieces, frozenset({2}))
    assert not gc.allows(2)
    gc.accept(0)
    assert gc.allows(2) and gc.allows(1)
    gc.accept(2)  # EOG on a complete match leaves the state alone
    assert gc.is_complete()
    gc2 = GrammarConstraint.from_text('root ::= "a" "b"', pieces, frozenset({2}))
    with pytest.raises(GrammarError):
        gc2.accept(2)
    with pytest.raises(GrammarError, match="Unexpected empty grammar stack"):
        gc2.accept(1)


def test_lazy_grammar_waits_for_trigger_word() -> None:
    pieces = [b"hello ", b"<tool>", b"{", b"}", b"x", b"<to", b"ol>{"]
    gc = GrammarConstraint.from_text(
        'root ::= "<tool>" "{" "}"', pieces, frozenset(), lazy=True, trigger_words=["<tool>"]
    )
    assert gc.allowed_mask().all()
    gc.accept(0)
    gc.accept(4)
    assert gc.awaiting_trigger
    gc.accept(5)
    gc.accept(6)  # "<tool>" completed across two tokens; "{" already consumed by the grammar
    assert not gc.awaiting_trigger
    assert set(np.flatnonzero(gc.allowed_mask()).tolist()) == {3}


def test_lazy_grammar_trigger_token() -> None:
    pieces = [b"hi", b"<tool>", b"{}"]
    gc = GrammarConstraint.from_text('root ::= "<tool>" "{}"', pieces, frozenset(), lazy=True, trigger_tokens=[1])
    gc.accept(0)
    assert gc.awaiting_trigger
    gc.accept(1)
    assert not gc.awaiting_trigger and gc.allows(2) and not gc.allows(0)


def test_lazy_without_triggers_is_rejected() -> None:
    with pytest.raises(GrammarError, match="no triggers"):
        GrammarConstraint.from_text('root ::= "a"', [b"a"], frozenset(), lazy=True)


def test_compiled_grammars_are_shared() -> None:
    assert compile_grammar('root ::= "a"') is compile_grammar('root ::= "a"')


def test_no_partial_key() -> None:
    assert Partial(0, 0) == NO_PARTIAL


def test_lazy_grammar_trigger_pattern_through_sampler() -> None:
    from pyllama.sampling import Sampler, SamplingParams

    pieces = [b"say ", b"<call>", b"x", b"{}", b"</s>"]
    params = SamplingParams(
        temperature=0.0, grammar='root ::= "<call>" "{}"', grammar_lazy=True, grammar_trigger_patterns=[r"[\s\S]*?(<call>)"]
    )
    s = Sampler(params, len(pieces), eog_ids=frozenset({4}), token_pieces=pieces)
    row = np.array([0.0, 0.0, 5.0, 0.0, 0.0], dtype=np.float32)
    assert s.sample(row) == 2  # not triggered yet: anything goes
    s.accept(0)
    s.accept(1)  # "<call>" triggers; the grammar has consumed it
    assert s.sample(row) == 3
