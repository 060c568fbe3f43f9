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


def _literal_merge(ids: list[int], pieces: list[bytes], probs: np.ndarray, logits: np.ndarray) -> None:
    """llama.cpp's combine loop as written: every pair of candidates."""
    for i0 in range(len(ids)):
        for i1 in range(len(ids)):
            if logits[i0] == -np.inf:
                break
            if i0 == i1 or logits[i1] == -np.inf:
                continue
            a, b = pieces[ids[i0]], pieces[ids[i1]]
            if a and b.startswith(a):
                dst, src = (i1, i0) if probs[i1] > probs[i0] else (i0, i1)
                probs[dst] += probs[src]
                logits[src] = -np.inf
                probs[src] = 0.0


def _merged(ids: np.ndarray, logits: np.ndarray, pieces: list[bytes], how: str) -> tuple[np.ndarray, np.ndarray, bool]:
    from pyllama.sampling.candidates import softmax
    from pyllama.sampling.infill import _merge_by_groups, _merge_prefixes

    c = softmax(Candidates(ids, logits.copy()), do_sort=True)
    assert c.probs is not None
    probs, out = c.probs.astype(np.float32, copy=True), c.logits.copy()
    fast = True
    if how == "fast":
        fast = _merge_by_groups(c.ids, pieces, probs, out)
        if not fast:
            _merge_prefixes(c.ids.tolist(), pieces, probs, out)
    elif how == "pairs":
        _merge_prefixes(c.ids.tolist(), pieces, probs, out)
    else:
        _literal_merge(c.ids.tolist(), pieces, probs, out)
    return probs, out, fast


@pytest.mark.parametrize("seed", range(60))
def test_infill_merge_matches_the_pairwise_loop_on_small_vocabularies(seed: int) -> None:
    """Random pieces over a 3-letter alphabet (deep prefix chains), random and tied
    logits, -inf tokens, candidate subsets: the same probabilities and logits, bit for bit,
    as llama.cpp's loop over every pair."""
    rng = random.Random(seed)
    words = {"".join(rng.choice("abc") for _ in range(rng.randrange(1, 6))) for _ in range(rng.randrange(3, 60))}
    pieces = [w.encode() for w in sorted(words)]
    rng.shuffle(pieces)
    n = len(pieces)
    step = rng.choice([0.0, 0.5, 1.0])  # quantized logits: exact ties
    logits = np.asarray([round(rng.gauss(0, 2) / step) * step if step else rng.gauss(0, 2) for _ in range(n)],
                        dtype=np.float32)
    for i in rng.sample(range(n), rng.randrange(0, n // 3 + 1)):
        logits[i] = -np.inf
    logits[rng.randrange(n)] = 1.0  # at least one finite
    ids = np.asarray(sorted(rng.sample(range(n), rng.randrange(1, n + 1))), dtype=np.int32)
    got_p, got_l, _ = _merged(ids, logits[ids], pieces, "fast")
    want_p, want_l, _ = _merged(ids, logits[ids], pieces, "literal")
    np.testing.assert_array_equal(got_p, want_p)
    np.testing.assert_array_equal(got_l, want_l)


@pytest.mark.parametrize("seed", range(6))
def test_infill_merge_matches_on_the_real_vocabulary(smol_pieces: list[bytes], seed: int) -> None:
    """SmolLM2's 49,152 pieces, random logits of several spreads (and a cut candidate set):
    the tree-based merge decides alone (no fallback) and agrees with the pairwise loop."""
    rng = np.random.default_rng(seed)
    ids = np.arange(len(smol_pieces), dtype=np.int32)
    logits = rng.normal(0, [0.5, 3.0, 8.0][seed % 3], ids.size).astype(np.float32)
    if seed >= 3:
        logits[rng.choice(ids.size, ids.size // 3, replace=False)] = -np.inf
        ids = np.sort(rng.choice(ids.size, ids.size // 2, replace=False)).astype(np.int32)
    got_p, got_l, fast = _merged(ids, logits[ids], smol_pieces, "fast")
    want_p, want_l, _ = _merged(ids, logits[ids], smol_pieces, "pairs")
    assert fast
    np.testing.assert_array_equal(got_p, want_p)
    np.testing.assert_array_equal(got_l, want_l)


def test_infill_over_the_whole_vocabulary_is_cheap_per_token(smol_pieces: list[bytes]) -> None:
    """The whole infill sampler on 49,152 candidates: ~15 ms of CPU time on a quiet machine
    (the pairwise loop took 300 ms of CPU, 0.5-1.3 s of wall time under load)."""
    from pyllama.sampling.infill import infill

    rng = np.random.default_rng(0)
    ids = np.arange(len(smol_pieces), dtype=np.int32)
    infill(Candidates(ids, rng.normal(0, 3, ids.size).astype(np.float32)), frozenset({2}), smol_pieces, 2)
    times = []
    for _ in range(5):
        logits = rng.normal(0, 3, ids.size).astype(np.float32)
        t0 = time.thread_time()
        infill(Candidates(ids, logits), frozenset({2}), smol_pieces, 2)
        times.append(time.thread_time() - t0)
    assert sorted(times)[2] < 0.060, times  # generous for a loaded machine


@pytest.mark.parametrize("seed", range(5))
def test_logit_bias_on_cut_candidates_sums_each_tokens_biases_once(seed: int) -> None:
    """Reordered or cut candidates (logit_bias after another sampler, or a grammar's
    allowed set): each biased token gets its biases' sum, as the per-token loop gave."""
    from pyllama.sampling.penalties import LogitBias

    rng = np.random.default_rng(seed)
    n_vocab = 500
    biases = [(int(t), float(b)) for t, b in zip(rng.integers(0, n_vocab, 300), rng.normal(0, 3, 300), strict=True)]
    biases += [(7, -np.inf), (7, 1.0), (n_vocab + 3, 2.0)]
    ids = rng.permutation(n_vocab)[: rng.integers(1, n_vocab)].astype(np.int32)
    logits = rng.normal(0, 2, ids.size).astype(np.float32)
    got = LogitBias(n_vocab, biases).apply(Candidates(ids, logits.copy())).logits
    total: dict[int, float] = {}
    for t, b in biases:
        if 0 <= t < n_vocab:
            total[t] = total.get(t, 0.0) + float(np.float32(b))  # kept as float32, summed as double
    want = logits.copy()
    for i, t in enumerate(ids.tolist()):
        if t in total:
            want[i] += np.float32(total[t])
    np.testing.assert_array_equal(got, want)
