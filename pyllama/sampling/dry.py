"""DRY ("Don't Repeat Yourself"): penalize tokens that would extend a repeated sequence.

Port of llama.cpp's llama_sampler_dry (itself from koboldcpp): sequence breakers stop the
repetition scan, a reverse Z-algorithm finds how long each earlier position matches the
current suffix, and the token that followed each match is penalized by
multiplier * base ** (length - allowed_length).

Breakers are strings; llama.cpp turns each into "head token -> tail token sequences"
by scanning the vocabulary for pieces that contain the string or end with a prefix of it.
That scan is done once per (vocabulary, breakers) and cached.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from pyllama.sampling.candidates import Candidates
from pyllama.sampling.vocab_cache import VocabCache

Tokenize = Callable[[bytes], list[int]]
Breakers = dict[int, list[tuple[int, ...]]]

_MAX_CHAR_LEN = 40
_MAX_SEQ_LEN = 20
_CACHE: dict[tuple[int, tuple[bytes, ...]], tuple[Sequence[bytes], Breakers]] = {}


def greedy_tokenize(pieces: Sequence[bytes]) -> Tokenize:
    """Longest-match tokenization over the pieces: a stand-in when no tokenizer is given."""
    table = {p: i for i, p in enumerate(pieces) if p}
    longest = max(map(len, table), default=1)

    def tokenize(text: bytes) -> list[int]:
        out: list[int] = []
        i = 0
        while i < len(text):
            for n in range(min(longest, len(text) - i), 0, -1):
                tok = table.get(text[i : i + n])
                if tok is not None:
                    out.append(tok)
                    i += n
                    break
            else:
                i += 1  # no piece covers this byte; skip it
        return out

    return tokenize


class _VocabIndex:
    """What breaker processing looks up in a vocabulary, built once per vocabulary: the
    pieces joined (where a breaker occurs inside a piece is a few array passes), and the pieces reversed and
    sorted (the pieces ending with a string are one run there, found by bisection)."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = pieces
        self.bytes = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        self.ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
        order = sorted(range(len(pieces)), key=lambda t: pieces[t][::-1])
        self.reversed_sorted = [pieces[t][::-1] for t in order]
        self.order = np.asarray(order, dtype=np.int64)
        self._greedy: Tokenize | None = None

    def greedy(self) -> Tokenize:
        if self._greedy is None:
            self._greedy = greedy_tokenize(self.pieces)
        return self._greedy

    def containing(self, text: bytes) -> set[int]:
        """Tokens whose piece contains `text`: every place in the joined pieces where it
        starts, narrowed one byte at a time, minus those that cross a piece boundary."""
        m = len(text)
        starts = np.flatnonzero(self.bytes[: max(self.bytes.size - m + 1, 0)] == text[0])
        for i in range(1, m):
            starts = starts[self.bytes[starts + i] == text[i]]
        owner = np.searchsorted(self.ends, starts, side="right")  # the piece each match starts in
        return set(owner[starts + m <= self.ends[owner]].tolist())

    def ending_with(self, text: bytes) -> list[int]:
        """Tokens whose piece ends with `text` (non-empty), in token order."""
        key = text[::-1]
        lo = bisect.bisect_left(self.reversed_sorted, key)
        stem = key.rstrip(b"\xff")
        if stem:
            hi = bisect.bisect_left(self.reversed_sorted, stem[:-1] + bytes([stem[-1] + 1]), lo)
        else:
            hi = len(self.reversed_sorted)
        return sorted(self.order[lo:hi].tolist())


_INDEXES = VocabCache(_VocabIndex)


def process_breakers(pieces: Sequence[bytes], breakers: Sequence[str], tokenize: Tokenize | None) -> Breakers:
    """get_overlapping_token_sequences for every breaker (cached per vocabulary).

    The vocabulary's index is built once; each breaker then costs a few `find` calls and
    bisections (no scan of the vocabulary), so a request that sends new breakers holds
    the model thread for milliseconds, not the better part of a second."""
    # llama.cpp skips empty breakers and truncates each to 40 bytes; equal ones (after the
    # cut) give the same sequences, so each is processed once.
    encoded = tuple(dict.fromkeys(b.encode("utf-8", "surrogatepass")[:_MAX_CHAR_LEN] for b in breakers if b))
    key = (id(pieces), encoded)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is pieces:
        return hit[1]
    index = _INDEXES.get(pieces)
    tok = tokenize or index.greedy()
    result: Breakers = {}

    def add(token: int, tail: tuple[int, ...]) -> None:
        seqs = result.setdefault(token, [])
        if tail not in seqs:
            seqs.append(tail)

    for text in encoded:
        whole = index.containing(text)
        for t in sorted(whole):
            seqs = result.get(t)
            if seqs is None:
                result[t] = [()]
            elif () not in seqs:
                seqs.append(())
        # pieces that end with a proper prefix of the breaker: head token + tokenized rest
        for j in range(len(text) - 1, 0, -1):
            heads = [t for t in index.ending_with(text[:j]) if t not in whole]
            if heads:
                tail = tuple(tok(text[j:])[:_MAX_SEQ_LEN])
                for t in heads:
                    add(t, tail)
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = (pieces, result)
    return result


class Dry:
    """llama_sampler_dry, with the same result at a per-token cost of a few NumPy passes.

    llama.cpp rescans the whole window for every token: the restart-sequence scan (Python
    loops over every position and every tail of a head token) and the reverse
    Z-algorithm. Both are kept up to date as tokens arrive instead. For every position j
    of the window, `_match[j]` is how many tokens before and at j equal the same number of
    tokens at the end of the window (the reverse Z-array, read forwards): appending token t
    turns it into `t == tokens[j] ? 1 + match[j - 1] : 0`, one vectorized pass. The nearest
    restart sequence only changes where a new token completes one (tails are at most 20
    tokens), so only the head tokens among the last 21 positions are checked, once each.
    """

    name = "dry"

    def __init__(self, multiplier: float, base: float, allowed_length: int, last_n: int, breakers: Breakers) -> None:
        self.multiplier = multiplier
        self.base = base
        self.allowed_length = allowed_length
        self.last_n = max(last_n, 0)
        self.breakers = breakers
        self.enabled = multiplier != 0.0 and base >= 1.0 and self.last_n != 0
        # head token -> tail length -> the tails of that length (set lookups, not a scan);
        # built for a head the first time it is accepted, since a breaker list of common
        # strings makes tens of thousands of heads and a text meets few of them
        self._tails: dict[int, dict[int, set[tuple[int, ...]]]] = {}
        self._max_tail = max((len(t) for tails in breakers.values() for t in tails), default=0)
        # single-token breakers are never penalized themselves
        self._unpenalized = np.fromiter((h for h, tails in breakers.items() if () in tails), dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._count = 0  # tokens accepted since the reset (absolute positions 0.._count-1)
        self._recent: list[int] = []  # the last tokens (at least _max_tail + 1), for tails
        self._heads: deque[int] = deque()  # positions of head tokens among the last _max_tail + 1
        self._restart = (-1, -1)  # (position, tail length) of the newest complete restart sequence
        self._window: list[int] = []  # accepted tokens not yet in the arrays
        self._tokens = np.zeros(0, dtype=np.int64)  # the window, oldest first
        self._match = np.zeros(0, dtype=np.int64)  # see the class docstring; last entry unused
        self._stale = True  # _match must be rebuilt from _tokens (set after many appends)

    def accept(self, token: int) -> None:
        if not self.enabled:
            return
        q = self._count
        self._count += 1
        self._window.append(token)
        if len(self._window) > self.last_n:
            del self._window[: len(self._window) - self.last_n]
            self._stale = True
        self._track_restart(q, token)

    def _track_restart(self, q: int, token: int) -> None:
        """Record a restart sequence that the token at position q completes (or is)."""
        if not self.breakers:
            return
        recent = self._recent
        recent.append(token)
        if len(recent) > 4 * (self._max_tail + 1):
            del recent[: len(recent) - self._max_tail - 1]
        heads = self._heads
        while heads and heads[0] < q - self._max_tail:
            heads.popleft()
        if token in self.breakers:
            heads.append(q)
            if token not in self._tails:
                by_length: dict[int, set[tuple[int, ...]]] = {}
                for tail in self.breakers[token]:
                    by_length.setdefault(len(tail), set()).add(tail)
                self._tails[token] = by_length
        for p in reversed(heads):
            length = q - p
            tails = self._tails[recent[-1 - length]].get(length)
            if tails and (tuple(recent[-length:]) if length else ()) in tails:
                best_p, best_len = self._restart
                if p > best_p or (p == best_p and length > best_len):
                    self._restart = (p, length)

    def _sync(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The window's tokens and match lengths, brought up to date."""
        pending = self._window
        n_old = self._tokens.size
        if not self._stale and len(pending) <= _INCREMENTAL:
            tokens, match = self._tokens, self._match
            for t in pending:
                prev = np.empty(tokens.size, dtype=np.int64)
                if tokens.size:
                    prev[0] = 0
                    prev[1:] = match[:-1]
                match = np.where(tokens == t, prev + 1, 0)
                match = np.append(match, 0)
                tokens = np.append(tokens, t)
            if tokens.size > self.last_n:
                cut = tokens.size - self.last_n
                tokens, match = tokens[cut:], match[cut:]
            self._tokens, self._match = tokens, match
        else:
            kept = self._tokens.tolist()[max(0, n_old + len(pending) - self.last_n) :] if not self._stale else []
            self._tokens = np.asarray((kept + pending)[-self.last_n :], dtype=np.int64)
            self._match = _suffix_matches(self._tokens.tolist())
            self._stale = False
        self._window = []
        n = self._tokens.size
        # positions before the window start cannot be part of a match
        clamped = np.minimum(self._match, np.arange(1, n + 1, dtype=np.int64))
        return self._tokens, clamped

    def apply(self, c: Candidates) -> Candidates:
        if not self.enabled:
            return c
        n = min(self._count, self.last_n)
        if n <= self.allowed_length:
            return c
        tokens, match = self._sync()
        rep_limit = n
        pos, length = self._restart
        start = self._count - n  # absolute position of the window's first token
        if pos >= start:
            rep_limit = (self._count - 1 - pos) - length
        if rep_limit < self.allowed_length:
            return c
        # Step 3: position j ends a repeat of the window's end; tokens[j + 1] would extend it
        repeat = np.minimum(match[: n - 1], rep_limit)
        hit = np.flatnonzero(repeat >= self.allowed_length)
        c.sorted = False
        if hit.size == 0:
            return c
        follow, length_at = tokens[hit + 1], repeat[hit]
        # the longest repeat each distinct token would extend (small arrays: no pass over
        # the vocabulary, which would also hand the interpreter lock to other threads)
        toks, inverse_t = np.unique(follow, return_inverse=True)
        best = np.full(toks.size, -1, dtype=np.int64)
        np.maximum.at(best, inverse_t.reshape(-1), length_at)
        if self._unpenalized.size:
            best[np.isin(toks, self._unpenalized)] = -1
        toks, best = toks[best >= 0], best[best >= 0]
        if toks.size and int(toks[-1]) < c.size and np.array_equal(c.ids[toks], toks):
            where, found = toks, best  # candidates still in vocabulary order: position = id
        else:
            at = np.flatnonzero(np.isin(c.ids, toks))
            where, found = at, best[np.searchsorted(toks, c.ids[at])]
        if where.size == 0:
            return Candidates(c.ids, c.logits.copy(), c.probs, False)
        exp = found - self.allowed_length
        max_exponent = int(88.7228391 / math.log(self.base)) if self.base > 1.000001 else 0
        if max_exponent > 0:
            exp = np.minimum(exp, max_exponent)
        # math.pow per distinct exponent: the same doubles as a scalar loop would give
        values, inverse = np.unique(exp, return_inverse=True)
        table = np.asarray([np.float32(self.multiplier * math.pow(self.base, int(e))) for e in values.tolist()],
                           dtype=np.float32)
        logits = c.logits.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            logits[where] -= table[inverse.reshape(-1)]
        return Candidates(c.ids, logits, c.probs, False)


_INCREMENTAL = 16  # more new tokens than this since the last step: rebuild by the Z-algorithm


def _suffix_matches(tokens: list[int]) -> npt.NDArray[np.int64]:
    """For each position j, the length of the longest run ending at j that equals the run
    ending at the last position (the reverse Z-algorithm of llama.cpp; linear time)."""
    n = len(tokens)
    rev = tokens[::-1]
    z = [0] * n
    lt = rt = 0
    for k in range(1, n):
        if k > rt:
            m = 0
            while m + k < n and rev[m] == rev[m + k]:
                m += 1
            z[k] = m
            if m > 0:
                lt, rt = k, k + m - 1
        else:
            p = k - lt
            right_part_len = rt - k + 1
            if z[p] < right_part_len:
                z[k] = z[p]
            else:
                i = rt + 1
                while i < n and rev[i] == rev[i - k]:
                    i += 1
                z[k] = i - k
                lt, rt = k, i - 1
    out = np.zeros(n, dtype=np.int64)
    if n > 1:
        out[: n - 1] = np.asarray(z[1:], dtype=np.int64)[::-1]
    return out
