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

import math
import re
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from pyllama.sampling.candidates import Candidates

Tokenize = Callable[[bytes], list[int]]
Breakers = dict[int, list[tuple[int, ...]]]

_MAX_CHAR_LEN = 40
_MAX_SEQ_LEN = 20
_CACHE: dict[tuple[int, tuple[bytes, ...]], tuple[Sequence[bytes], Breakers]] = {}


def greedy_tokenize(pieces: Sequence[bytes]) -> Tokenize:
    """Longest-match tokenization over the pieces: a stand-in when no tokenizer is given."""
    table = {p: i for i, p in enumerate(pieces) if p}
    longest = max((len(p) for p in table), default=1)

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


def process_breakers(pieces: Sequence[bytes], breakers: Sequence[str], tokenize: Tokenize | None) -> Breakers:
    """get_overlapping_token_sequences for every breaker (cached per vocabulary)."""
    # llama.cpp skips empty breakers and truncates each to 40 bytes; equal ones (after the
    # cut) give the same sequences, so each is processed once.
    encoded = tuple(dict.fromkeys(b.encode("utf-8", "surrogatepass")[:_MAX_CHAR_LEN] for b in breakers if b))
    key = (id(pieces), encoded)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is pieces:
        return hit[1]
    tok = tokenize or greedy_tokenize(pieces)
    blob = b"".join(pieces)
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    suffixes = _suffix_index(pieces)
    result: Breakers = {}

    def add(token: int, tail: tuple[int, ...]) -> None:
        seqs = result.setdefault(token, [])
        if tail not in seqs:
            seqs.append(tail)

    for text in encoded:
        found = np.fromiter((m.start() for m in re.finditer(b"(?=" + re.escape(text) + b")", blob)), dtype=np.int64)
        owner = np.searchsorted(ends, found, side="right")  # the piece each match starts in
        inside = owner < len(pieces)
        found, owner = found[inside], owner[inside]
        whole: set[int] = set(owner[found + len(text) <= ends[owner]].tolist())
        for t in sorted(whole):
            add(t, ())
        # pieces that end with a proper prefix of the breaker: head token + tokenized rest
        # (looked up in an index of piece endings: no scan of the vocabulary per prefix)
        for j in range(len(text) - 1, 0, -1):
            heads = [t for t in suffixes.get(text[:j], ()) if t not in whole]
            if heads:
                tail = tuple(tok(text[j:])[:_MAX_SEQ_LEN])
                for t in heads:
                    add(t, tail)
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = (pieces, result)
    return result


_SUFFIXES: dict[int, tuple[Sequence[bytes], dict[bytes, list[int]]]] = {}


def _suffix_index(pieces: Sequence[bytes]) -> dict[bytes, list[int]]:
    """Every ending (up to 39 bytes) of every piece -> the tokens whose piece ends so, in
    token order; built once per vocabulary."""
    hit = _SUFFIXES.get(id(pieces))
    if hit is not None and hit[0] is pieces:
        return hit[1]
    index: dict[bytes, list[int]] = {}
    for t, piece in enumerate(pieces):
        for k in range(1, min(len(piece), _MAX_CHAR_LEN - 1) + 1):
            index.setdefault(piece[-k:], []).append(t)
    if len(_SUFFIXES) > 2:
        _SUFFIXES.clear()
    _SUFFIXES[id(pieces)] = (pieces, index)
    return index


class Dry:
    """llama_sampler_dry."""

    name = "dry"

    def __init__(self, multiplier: float, base: float, allowed_length: int, last_n: int, breakers: Breakers) -> None:
        self.multiplier = multiplier
        self.base = base
        self.allowed_length = allowed_length
        self.last_n = max(last_n, 0)
        self.breakers = breakers
        self.enabled = multiplier != 0.0 and base >= 1.0 and self.last_n != 0
        self.last: deque[int] = deque(maxlen=self.last_n or 1)

    def accept(self, token: int) -> None:
        if self.enabled:
            self.last.append(token)

    def reset(self) -> None:
        self.last.clear()

    def apply(self, c: Candidates) -> Candidates:
        if not self.enabled:
            return c
        n = min(len(self.last), self.last_n)
        if n <= self.allowed_length:
            return c
        # rat(i): the i-th most recent token
        rev = list(self.last)[::-1][:n]
        rep_limit = self._repeat_limit(rev, n)
        if rep_limit < self.allowed_length:
            return c
        repeat = self._repeat_counts(rev, n, rep_limit)
        max_repeat: dict[int, int] = {}
        for i in range(n - 1):
            length = repeat[i]
            if length >= self.allowed_length:
                token = rev[n - 2 - i]
                if max_repeat.get(token, -1) < length:
                    max_repeat[token] = length
        if not max_repeat:
            c.sorted = False
            return c
        max_exponent = int(88.7228391 / math.log(self.base)) if self.base > 1.000001 else 0
        logits = c.logits.copy()
        pos = np.flatnonzero(np.isin(c.ids, np.fromiter(max_repeat, dtype=np.int64)))
        for i in pos.tolist():
            token = int(c.ids[i])
            if any(len(tail) == 0 for tail in self.breakers.get(token, ())):
                continue
            exp = max_repeat[token] - self.allowed_length
            if max_exponent > 0 and exp > max_exponent:
                exp = max_exponent
            logits[i] -= np.float32(self.multiplier * math.pow(self.base, exp))
        return Candidates(c.ids, logits, c.probs, False)

    def _repeat_limit(self, rev: list[int], n: int) -> int:
        """Step 1: the nearest sequence breaker bounds how far back a repeat may reach."""
        for i in range(n):
            tails = self.breakers.get(rev[i])
            if not tails:
                continue
            longest = -1
            for tail in tails:
                seq_len = len(tail)
                if longest < seq_len <= i and all(tail[o] == rev[i - o - 1] for o in range(seq_len)):
                    longest = seq_len
            if longest >= 0:
                return i - longest
        return n

    @staticmethod
    def _repeat_counts(rev: list[int], n: int, rep_limit: int) -> list[int]:
        """Step 2: reverse Z-algorithm; counts[last - k] = match length of suffix at offset k."""
        counts = [0] * n
        last = n - 1
        lt = rt = 0
        for k in range(1, n):
            if k > rt:
                m = 0
                while m + k < n and rev[m] == rev[m + k]:
                    m += 1
                counts[last - k] = min(m, rep_limit)
                if m > 0:
                    lt, rt = k, k + m - 1
            else:
                p = k - lt
                right_part_len = rt - k + 1
                if counts[last - p] < right_part_len:
                    counts[last - k] = min(counts[last - p], rep_limit)
                else:
                    i = rt + 1
                    while i < n and rev[i] == rev[i - k]:
                        i += 1
                    counts[last - k] = min(i - k, rep_limit)
                    lt, rt = k, i - 1
        return counts
