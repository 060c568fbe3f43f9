"""ngram-mod: llama.cpp's hashed n-gram table for speculative decoding (common/ngram-mod.cpp).

One fixed-size table (4M entries) maps a hash of n tokens to the token that last followed
them. It is shared by every slot and outlives requests: each request's prompt is added
when it starts, the generated text in chunks of 32 tokens while it runs, so text one
request repeats can be guessed in the next. A draft chains lookups: the last n tokens give
the next guess, which shifts into the key for the one after, up to `n_max`; a chain that
breaks before `n_min` guesses is no draft. The table is wiped when it gets a quarter full
(checked when a request starts) and after five drafts in a row of a slot got less than a
quarter accepted, as llama.cpp does, so stale guesses do not linger.

Hash collisions are not detected (llama.cpp does not either): a guess may be wrong, never
harmful, since the model checks every guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

EMPTY = -1
TABLE_SIZE = 4 * 1024 * 1024  # llama.cpp's common_speculative_impl_ngram_mod
MULT = 6364136223846793005
MASK = (1 << 64) - 1
CHUNK = 32  # generated tokens are added once this many have piled up
RESET_OCCUPANCY = 0.25
LOW_ACCEPT = 0.25
LOW_STREAK = 5


@dataclass
class NgramModParams:
    n_match: int = 24  # tokens hashed into a key (--spec-ngram-mod-n-match)
    n_max: int = 64  # most tokens drafted (--spec-ngram-mod-n-max)
    n_min: int = 48  # a chain shorter than this is no draft (--spec-ngram-mod-n-min)


@dataclass
class SeqInfo:
    """One slot's progress through the table (llama.cpp's seq_info)."""

    i_last: int = 0  # the context up to here (as key starts) is in the table
    n_draft_last: int = 0  # length of the last draft, before any cut to the room left
    n_low: int = 0  # consecutive drafts with less than a quarter accepted


@dataclass
class NgramMod:
    n: int
    size: int = TABLE_SIZE
    used: int = 0
    entries: np.ndarray[Any, np.dtype[np.int32]] = field(init=False)
    seqs: dict[int, SeqInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entries = np.full(self.size, EMPTY, dtype=np.int32)

    def idx(self, key: list[int]) -> int:
        """common_ngram_mod::idx: a 64-bit multiply-add over the n tokens, modulo the size."""
        res = 0
        for t in key[: self.n]:
            res = (res * MULT + t) & MASK
        return res % self.size

    def get(self, key: list[int]) -> int:
        return int(self.entries[self.idx(key)])

    def add_range(self, tokens: list[int], start: int, stop: int) -> None:
        """common_ngram_mod::add for every key start in [start, stop): the n tokens from there
        map to the token after them. Vectorized; a later key wins a slot, as sequentially."""
        count = stop - start
        if count <= 0:
            return
        n = self.n
        arr = np.asarray(tokens[start : stop + n], dtype=np.int64).astype(np.uint64)
        h = np.zeros(count, dtype=np.uint64)
        mult = np.uint64(MULT)
        for k in range(n):
            h = h * mult + arr[k : k + count]  # wraps modulo 2**64 like size_t
        idx = (h % np.uint64(self.size)).astype(np.int64)
        vals = arr[n : n + count].astype(np.int32)
        uniq, first_rev = np.unique(idx[::-1], return_index=True)
        last = count - 1 - first_rev  # the last add of each slot decides its value
        self.used += int(np.count_nonzero(self.entries[uniq] == EMPTY))
        self.entries[uniq] = vals[last]

    def reset(self) -> None:
        self.entries.fill(EMPTY)
        self.used = 0

    def begin(self, seq: int, prompt: list[int]) -> None:
        """A request starts on `seq`: add its prompt; wipe the table if it got a quarter full."""
        info = self.seqs.setdefault(seq, SeqInfo())
        info.i_last = info.n_draft_last = 0
        n = self.n
        if len(prompt) < n:
            return
        self.add_range(prompt, 0, len(prompt) - n)
        info.i_last = len(prompt) - n
        if self.used / self.size > RESET_OCCUPANCY:
            self.reset()

    def draft(self, seq: int, tokens: list[int], sampled: int, p: NgramModParams) -> list[int]:
        """draft_one: chain lookups from the last n tokens (`tokens` then `sampled`)."""
        info = self.seqs.setdefault(seq, SeqInfo())
        info.n_draft_last = 0
        n, cur = self.n, len(tokens)
        if cur < n:
            return []
        if info.i_last + CHUNK < cur:
            self.add_range(tokens, info.i_last, cur - n)
            info.i_last = cur - n
        window = [*tokens[cur - n + 1 :], sampled]
        out: list[int] = []
        for i in range(p.n_max):
            token = self.get(window[i : i + n])
            if token == EMPTY:
                if i < p.n_min:
                    return []
                break
            window.append(token)
            out.append(token)
        info.n_draft_last = len(out)
        return out

    def accept(self, seq: int, n_accepted: int) -> None:
        """After a draft of this type was checked: five poor drafts in a row wipe the table."""
        info = self.seqs.setdefault(seq, SeqInfo())
        if info.n_draft_last <= 0:
            return
        if n_accepted / info.n_draft_last < LOW_ACCEPT:
            info.n_low += 1
            if info.n_low >= LOW_STREAK:
                self.reset()
                info.n_low = 0
                info.i_last = 0
        else:
            info.n_low = 0
