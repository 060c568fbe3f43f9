"""The costly samplers, made cheap, give exactly what the straightforward versions give.

Issue 19: DRY over a long window and infill over the whole vocabulary held the model
thread (and so every slot) for milliseconds to a second per token. Their fast versions
are checked here against literal ports of llama.cpp's loops on random inputs, and their
per-token cost is bounded on the real SmolLM2 vocabulary.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pytest

from pyllama.sampling.candidates import Candidates
from pyllama.sampling.dry import Dry


class ReferenceDry:
    """llama_sampler_dry_apply as written in llama.cpp: a rescan of the window per token."""

    def __init__(self, multiplier: float, base: float, allowed: int, last_n: int,
                 breakers: dict[int, list[tuple[int, ...]]]) -> None:
        self.multiplier, self.base, self.allowed, self.last_n = multiplier, base, allowed, last_n
        self.breakers = breakers
        self.last: list[int] = []

    def accept(self, token: int) -> None:
        self.last = [*self.last, token][-self.last_n :]

    def apply(self, c: Candidates) -> Candidates:
        n = len(self.last)
        if n <= self.allowed:
            return c

        def rat(i: int) -> int:
            return self.last[n - 1 - i]

        rep_limit = n
        for i in range(n):
            longest = -1
            for tail in self.breakers.get(rat(i), []):
                if longest < len(tail) <= i and all(tail[o] == rat(i - o - 1) for o in range(len(tail))):
                    longest = len(tail)
            if longest >= 0:
                rep_limit = i - longest
                break
        if rep_limit < self.allowed:
            return c
        counts = [0] * n
        last, lt, rt = n - 1, 0, 0
        for k in range(1, n):
            if k > rt:
                m = 0
                while m + k < n and rat(m) == rat(m + k):
                    m += 1
                counts[last - k] = min(m, rep_limit)
                if m > 0:
                    lt, rt = k, k + m - 1
            else:
                p = k - lt
                if counts[last - p] < rt - k + 1:
                    counts[last - k] = min(counts[last - p], rep_limit)
                else:
                    i = rt + 1
                    while i < n and rat(i) == rat(i - k):
                        i += 1
                    counts[last - k] = min(i - k, rep_limit)
                    lt, rt = k, i - 1
        best: dict[int, int] = {}
        for i in range(n - 1):
            if counts[i] >= self.allowed:
                token = rat(n - 2 - i)
                best[token] = max(best.get(token, -1), counts[i])
        max_exponent = int(88.7228391 / math.log(self.base)) if self.base > 1.000001 else 0
        logits = c.logits.copy()
        for i, token in enumerate(c.ids.tolist()):
            if token in best and () not in self.breakers.get(token, []):
                exp = best[token] - self.allowed
                if max_exponent > 0 and exp > max_exponent:
                    exp = max_exponent
                with np.errstate(over="ignore"):
                    logits[i] -= np.float32(self.multiplier * math.pow(self.base, exp))
        return Candidates(c.ids, logits, c.probs, False)


def _random_breakers(rng: random.Random, n_vocab: int) -> dict[int, list[tuple[int, ...]]]:
    out: dict[int, list[tuple[int, ...]]] = {}
    for _ in range(rng.randrange(0, 4)):
        head = rng.randrange(n_vocab)
        tail = tuple(rng.randrange(n_vocab) for _ in range(rng.choice([0, 0, 1, 2, 3, 5])))
        if tail not in out.setdefault(head, []):
            out[head].append(tail)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_dry_matches_the_rescan_on_random_histories(seed: int) -> None:
    """Random small vocabularies (many repeats), breakers with tails, windows that slide,
    steps after one token and after many (both update paths), resets: bit-identical logits."""
    rng = random.Random(seed)
    n_vocab = rng.choice([2, 3, 5, 8])
    breakers = _random_breakers(rng, n_vocab)
    args = (rng.choice([0.8, 2.0, 1e30]), rng.choice([1.0, 1.1, 1.75, 30.0]), rng.randrange(0, 4),
            rng.choice([3, 7, 20, 64, 500]), breakers)
    fast, ref = Dry(*args), ReferenceDry(*args)
    ids = np.arange(n_vocab + 2, dtype=np.int32)
    for _step in range(60):
        if rng.random() < 0.03:
            fast.reset()
            ref.last = []
        period = rng.randrange(1, 5)
        for _ in range(rng.choice([1, 1, 1, 2, 17, 40, 200])):
            t = rng.randrange(n_vocab) if rng.random() < 0.3 else (len(ref.last) % period)
            fast.accept(t)
            ref.accept(t)
        order = ids.copy()
        if rng.random() < 0.3:
            rng.shuffle(order)  # type: ignore[arg-type]
        logits = np.asarray([rng.uniform(-5, 5) for _ in order], dtype=np.float32)
        got = fast.apply(Candidates(order, logits.copy(), None, True))
        want = ref.apply(Candidates(order, logits.copy(), None, True))
        assert got.ids.tolist() == want.ids.tolist()
        np.testing.assert_array_equal(got.logits, want.logits)
        assert got.sorted == want.sorted


def test_dry_restart_sequence_with_tail_limits_the_repeat() -> None:
    """A two-token restart sequence (head 3, tail (4,)) between the repeats: only what
    follows it can count, so `0 1 2 0 1` after `3 4` penalizes nothing beyond the limit."""
    args = (1.0, 2.0, 1, 100, {3: [(4,)]})
    for history in ([0, 1, 2, 0, 1, 3, 4, 0, 1], [0, 1, 3, 4, 2, 0, 1], [3, 0, 1, 2, 3, 4, 0, 1]):
        fast, ref = Dry(*args), ReferenceDry(*args)
        for t in history:
            fast.accept(t)
            ref.accept(t)
        logits = np.zeros(6, dtype=np.float32)
        ids = np.arange(6, dtype=np.int32)
        want = ref.apply(Candidates(ids, logits.copy()))
        np.testing.assert_array_equal(fast.apply(Candidates(ids, logits.copy())).logits, want.logits)


@pytest.fixture(scope="module")
def smol_pieces(smollm2_path: Path) -> list[bytes]:
    from pyllama.gguf_file import read_gguf
    from pyllama.tokenizer import Tokenizer

    return Tokenizer.from_gguf(read_gguf(smollm2_path)).pieces_bytes()


BREAKERS = [f"{i:02d} breaker string that is forty bytes long"[:40] for i in range(32)]


def test_dry_worst_legal_request_is_cheap_per_token(smol_pieces: list[bytes]) -> None:
    """32 breakers of 40 bytes, a window of 8,192 tokens of repetitive text: the step
    (all of DRY's work for one token) stays in the low milliseconds; the rescan took 25 ms."""
    from pyllama.sampling.dry import process_breakers

    breakers = process_breakers(smol_pieces, BREAKERS, None)
    dry = Dry(0.8, 1.75, 1, 8192, breakers)
    rng = np.random.default_rng(0)
    for t in rng.integers(0, 40, 8192).tolist():
        dry.accept(t)
    ids = np.arange(len(smol_pieces), dtype=np.int32)
    logits = rng.normal(0, 3, ids.size).astype(np.float32)
    dry.apply(Candidates(ids, logits))
    times = []
    for t in rng.integers(0, 40, 20).tolist():
        dry.accept(t)
        t0 = time.perf_counter()
        dry.apply(Candidates(ids, logits))
        times.append(time.perf_counter() - t0)
    assert sorted(times)[len(times) // 2] < 0.010, times  # generous: ~1 ms on a quiet machine
