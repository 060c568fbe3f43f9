"""Per-sampler cases from llama.cpp's tests/test-sampling.cpp (same inputs, same expected probs)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from pyllama.sampling import draw, truncation
from pyllama.sampling.candidates import Candidates
from pyllama.sampling.dry import Dry
from pyllama.sampling.penalties import Penalties
from pyllama.sampling.rng import MT19937
from pyllama.sampling.temperature import temp, temp_ext

Fn = Callable[[Candidates], Candidates]


def make_candidates(probs: list[float]) -> Candidates:
    p = np.asarray(probs, dtype=np.float32)
    with np.errstate(divide="ignore"):
        logits = np.log(p).astype(np.float32)
    return Candidates(np.arange(len(probs), dtype=np.int32), logits, p.copy())


def run(probs: list[float], *steps: Fn, dist: bool = True) -> Candidates:
    c = make_candidates(probs)
    for step in steps:
        c = step(c)
    if dist:
        c = draw.Dist(0).apply(c)
    return c


def check(c: Candidates, expected: list[float]) -> None:
    assert c.probs is not None
    assert c.size == len(expected), (c.probs, expected)
    np.testing.assert_allclose(c.probs, expected, atol=1e-5)


P4 = [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    ("t", "expected"), [(1.0, [0.1, 0.2, 0.3, 0.4]), (0.0, [0.0, 0.0, 0.0, 1.0])]
)
def test_temp(t: float, expected: list[float]) -> None:
    check(run(P4, lambda c: temp(c, t)), expected)
    check(run(P4, lambda c: temp_ext(c, t, 0.0, 1.0)), expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, [1.0]), (3, [0.44444, 0.33333, 0.22222]), (4, [0.4, 0.3, 0.2, 0.1]), (0, [0.1, 0.2, 0.3, 0.4])],
)
def test_top_k(k: int, expected: list[float]) -> None:
    check(run(P4, lambda c: truncation.top_k(c, k)), expected)


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.0, [1.0]), (0.7, [0.571429, 0.428571]), (0.8, [0.44444, 0.33333, 0.22222]), (1.0, [0.1, 0.2, 0.3, 0.4])],
)
def test_top_p(p: float, expected: list[float]) -> None:
    check(run(P4, lambda c: truncation.top_p(c, p, 0)), expected)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.00, [0.1, 0.2, 0.3, 0.4]),
        (0.24, [0.1, 0.2, 0.3, 0.4]),
        (0.26, [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]),
        (0.49, [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]),
        (0.51, [0.3 / 0.7, 0.4 / 0.7]),
        (0.74, [0.3 / 0.7, 0.4 / 0.7]),
        (0.76, [1.0]),
        (1.00, [1.0]),
        (1.05, [1.0]),
    ],
)
def test_min_p(p: float, expected: list[float]) -> None:
    check(run(P4, lambda c: truncation.min_p(c, p, 0)), expected)


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.09, [0.1]), (0.19, [0.2, 0.1]), (0.29, [0.3, 0.2, 0.1]), (0.39, [0.4, 0.3, 0.2, 0.1])],
)
def test_xtc(t: float, expected: list[float]) -> None:
    rng = MT19937(0)
    check(run([0.4, 0.3, 0.2, 0.1], lambda c: truncation.xtc(c, 0.99, t, 0, rng), dist=False), expected)


@pytest.mark.parametrize(
    ("probs", "expected"), [([0.97, 0.01, 0.01, 0.01], [0.97]), ([0.4, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2])]
)
def test_typical(probs: list[float], expected: list[float]) -> None:
    check(run(probs, lambda c: truncation.typical(c, 0.5, 0), dist=False), expected)


@pytest.mark.parametrize(
    ("last", "expected", "rep", "freq", "pres"),
    [
        ([0], [0, 0.25, 0.25, 0.25, 0.25], 50.0, 0.0, 0.0),
        ([0, 1, 2], [0, 0, 0, 0.5, 0.5], 50.0, 0.0, 0.0),
        ([0, 1, 2, 0, 0], [0, 0, 0, 0.5, 0.5], 50.0, 0.0, 0.0),
        ([0], [0.000011, 0.249997, 0.249997, 0.249997, 0.249997], 1.0, 5.0, 5.0),
        ([0, 1, 2], [0.000023, 0.000023, 0.000023, 0.499966, 0.499966], 1.0, 5.0, 5.0),
        ([0, 1, 2, 0, 0], [0.000000, 0.000023, 0.000023, 0.499977, 0.499977], 1.0, 5.0, 5.0),
    ],
)
def test_penalties(last: list[int], expected: list[float], rep: float, freq: float, pres: float) -> None:
    pen = Penalties(5, len(last), rep, freq, pres)
    for t in last:
        pen.accept(t)
    check(run([0.2] * 5, pen.apply), expected)


def test_penalties_window_forgets_old_tokens() -> None:
    pen = Penalties(5, 2, 50.0, 0.0, 0.0)
    for t in [0, 1, 2]:
        pen.accept(t)  # token 0 fell out of the 2-token window
    check(run([0.2] * 5, pen.apply), [1 / 3, 0.0, 0.0, 1 / 3, 1 / 3])


@pytest.mark.parametrize(
    ("probs", "last", "expected", "mult", "base", "allowed", "last_n", "breakers"),
    [
        ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, {}),
        ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, {}),
        ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, {3: [()]}),
        ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, {}),
        ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, {}),
    ],
)
def test_dry(
    probs: list[float],
    last: list[int],
    expected: list[float],
    mult: float,
    base: float,
    allowed: int,
    last_n: int,
    breakers: dict[int, list[tuple[int, ...]]],
) -> None:
    dry = Dry(mult, base, allowed, last_n, breakers)
    for t in last:
        dry.accept(t)
    check(run(probs, dry.apply), expected)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1.0, [0.0, 0.0, 0.428571, 0.571429]), (0.0, [0.1, 0.2, 0.3, 0.4]), (3.0, [0.1, 0.2, 0.3, 0.4])],
)
def test_top_n_sigma(n: float, expected: list[float]) -> None:
    check(run(P4, lambda c: truncation.top_n_sigma(c, n)), expected)


def queue_tester(n_vocab: int) -> Candidates:
    with np.errstate(divide="ignore"):
        logits = np.log(np.arange(n_vocab, dtype=np.float32))
    return Candidates(np.arange(n_vocab, dtype=np.int32), logits.astype(np.float32))


QUEUE_CASES = [
    ("k", 10000, 1.0, 1.0), ("k", 1, 1.0, 1.0), ("p", 10000, 1.0, 1.0), ("p", 10000, 0.0, 1.0),
    ("m", 10000, 1.0, 1.0), ("m", 10000, 1.0, 1e-12), ("k", 100, 1.0, 1.0), ("p", 10000, 0.0003, 1.0),
    ("p", 10000, 0.8, 1.0), ("m", 10000, 1.0, 9997.9 / 9999.0), ("m", 10000, 1.0, 0.1),
    ("kp", 100, 0.8, 0.1), ("km", 100, 0.8, 0.1), ("pk", 100, 0.8, 0.1), ("pm", 100, 0.8, 0.1),
    ("mk", 100, 0.8, 0.1), ("mp", 100, 0.8, 9997.9 / 9999.0), ("mp", 100, 0.8, 0.1),
    ("kpm", 100, 0.8, 0.1), ("kmp", 100, 0.8, 0.1), ("pkm", 100, 0.8, 0.1), ("pmk", 100, 0.8, 0.1),
    ("mkp", 100, 0.8, 0.1), ("mpk", 100, 0.8, 0.1),
]  # fmt: skip


@pytest.mark.parametrize(("seq", "k", "p", "m"), QUEUE_CASES)
def test_sampler_queue(seq: str, k: int, p: float, m: float) -> None:
    """test_sampler_queue: sizes and end tokens after each sampler on logits log(id)."""
    n_vocab = 10000
    c = queue_tester(n_vocab)
    min_token_id = 0
    max_token_id = n_vocab - 1
    for s in seq:
        if s == "k":
            c = truncation.top_k(c, k)
        elif s == "p":
            c = truncation.top_p(c, p, 1)
        else:
            c = truncation.min_p(c, m, 1)
        c = draw.Dist(0).apply(c)
        size = c.size
        if s == "k":
            expected = min(size, k)
            min_token_id = max(min_token_id, n_vocab - k)
            assert size == expected
            assert c.ids[0] == max_token_id and c.ids[expected - 1] == min_token_id
        elif s == "p":
            divisor = n_vocab * (n_vocab - 1) // 2 - min_token_id * (min_token_id - 1) // 2
            target = math.ceil(np.float32(p) * np.float32(divisor))
            min_token_id = n_vocab
            expected = 0
            cumsum = 0
            while True:
                min_token_id -= 1
                expected += 1
                cumsum += min_token_id
                if cumsum >= target:
                    break
            if min_token_id == 1:
                min_token_id -= 1
                expected += 1
            assert size == expected
            assert not c.sorted or (c.ids[0] == max_token_id and c.ids[expected - 1] == min_token_id)
        else:
            expected = math.ceil(np.float32(1.0 - np.float32(m)) * n_vocab)
            expected = min(max(expected, 1), size)
            min_token_id = math.floor(np.float32(m) * n_vocab)
            min_token_id = min(max(min_token_id, 1, n_vocab - size), n_vocab - 1)
            assert size == expected
            assert not c.sorted or (c.ids[0] == max_token_id and c.ids[expected - 1] == min_token_id)


def test_dist_singleton_keeps_rng_aligned() -> None:
    single, control = draw.Dist(4242), draw.Dist(4242)
    single.apply(Candidates(np.arange(1, dtype=np.int32), np.zeros(1, np.float32)))
    control.apply(Candidates(np.arange(2, dtype=np.int32), np.zeros(2, np.float32)))
    for _ in range(4):
        a = single.apply(Candidates(np.arange(256, dtype=np.int32), np.zeros(256, np.float32)))
        b = control.apply(Candidates(np.arange(256, dtype=np.int32), np.zeros(256, np.float32)))
        assert a.selected == b.selected


def test_dry_breakers_from_vocabulary() -> None:
    """get_overlapping_token_sequences: pieces containing a breaker are single-token breakers;
    pieces ending with a breaker's prefix get the rest of the breaker, tokenized, as tail."""
    from pyllama.sampling.dry import process_breakers

    pieces = [b"a", b"b", b"\n", b"x\ny", b"ab", b"c:", b":", b"q", b"xa"]
    got = process_breakers(pieces, ["\n", ":", "ab"], None)
    assert got == {2: [()], 3: [()], 5: [()], 6: [()], 4: [()], 0: [(1,)], 8: [(1,)]}


def test_dry_through_sampler_respects_breakers() -> None:
    from pyllama.sampling import Sampler, SamplingParams

    pieces = [b"a", b"b", b"c", b"\n"]
    params = SamplingParams(temperature=0.0, dry_multiplier=5.0, dry_allowed_length=1, dry_penalty_last_n=16)
    row = np.array([0.0, 0.0, 0.5, 0.0], dtype=np.float32)
    s = Sampler(params, 4, token_pieces=pieces)
    s.accept_prompt([2, 0, 2, 0])  # "c a c a": emitting c again would extend a repeat
    assert s.sample(row) != 2
    s2 = Sampler(params, 4, token_pieces=pieces)
    s2.accept_prompt([2, 0, 3, 2, 0])  # "c a" repeats; what followed it was the newline...
    row2 = np.array([0.0, 0.0, 0.0, 0.5], dtype=np.float32)
    assert s2.sample(row2) == 3  # ...and a sequence breaker is never penalized itself


def test_penalize_nl_false_exempts_newline() -> None:
    from pyllama.sampling import Sampler, SamplingParams

    pieces = [b"a", b"\n"]
    row = np.array([1.0, 1.01], dtype=np.float32)
    on = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0), 2, token_pieces=pieces)
    off = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0, penalize_nl=False), 2, token_pieces=pieces)
    for s in (on, off):
        s.accept_prompt([1])
    assert on.sample(row) == 0 and off.sample(row) == 1


def test_adaptive_p_runs_and_is_seeded() -> None:
    from pyllama.sampling import Sampler, SamplingParams

    rows = np.random.default_rng(1).normal(0, 2, (8, 300)).astype(np.float32)

    def run() -> list[int]:
        s = Sampler(SamplingParams(seed=9, samplers=["top_k", "adaptive_p"], adaptive_target=0.3), 300)
        out = []
        for r in rows:
            t = s.sample(r)
            s.accept(t)
            out.append(t)
        return out

    assert run() == run()
    assert Sampler(SamplingParams(samplers=["adaptive_p"]), 10).chain_names[-1] == "adaptive-p"


def test_infill_merges_prefixes_and_prefers_eog_when_text_is_weak() -> None:
    from pyllama.sampling.infill import infill

    pieces = [b"fo", b"foo", b"bar", b"<eot>"]
    eog = frozenset({3})
    # text clearly ahead: "fo" is a prefix of "foo" -> merged into the likelier one
    c = infill(make_candidates([0.3, 0.5, 0.19, 0.01]), eog, pieces, 3)
    assert 1 in c.ids.tolist() and 0 not in c.ids.tolist()
    assert c.probs is not None and abs(float(c.probs.sum()) - 1.0) < 1e-5
    # EOG mass large relative to text: only EOG tokens stay
    c = infill(make_candidates([0.2, 0.2, 0.2, 0.4]), eog, pieces, 3)
    assert c.ids.tolist() == [3]
    # no text token reaches 0.2 after merging and no EOG left: a single end token
    flat = make_candidates([0.14] * 7 + [0.0001])
    c = infill(flat, frozenset({7}), [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"<e>"], 7)
    assert c.ids.tolist() == [7] and float(c.logits[0]) == 1.0
