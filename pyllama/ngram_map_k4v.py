"""ngram-map-k4v: llama.cpp's n-gram map with value statistics (common/ngram-map.cpp,
`key_only = false`).

Like ngram-map-k it looks the last n tokens up earlier in the context, but before drafting
it counts which m-grams followed that key (up to 4 distinct ones per key): a key must have
been looked up `min_hits` times, and the most frequent follower must occur at least twice
as often as all others together, so a key with several continuations is not guessed. The
draft is the m tokens after the latest occurrence (as llama.cpp), cut to what the chosen
follower had accepted last time. Matches are found as pyllama's ngram-map-k finds them (the
latest earlier occurrence) and the statistics live for one task, as ngram-map-k's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_VALUES = 4  # COMMON_NGRAM_MAX_VALUES
MAX_COUNT = 16380  # COMMON_NGRAM_MAX_VALUE_COUNT


@dataclass
class Value:
    idx: int = 0  # where this m-gram starts in the context (0: unused slot)
    num: int = 0  # how often it followed the key
    n_accepted: int = 0  # accepted tokens of its last draft


@dataclass
class KeyStats:
    values: list[Value]
    key_num: int = 0  # lookups of this key
    stat_idx: int = 0  # occurrences before this were counted


@dataclass
class K4vState:
    """One slot's key statistics for the running task."""

    keys: dict[tuple[int, ...], KeyStats] = field(default_factory=dict)
    last: tuple[tuple[int, ...], int] | None = None  # key and value slot of the last draft


def _starts(arr: np.ndarray[Any, Any], key: list[int], lo: int, hi: int) -> list[int]:
    """Every start in [lo, hi] where `key` occurs in `arr`, ascending."""
    if hi < lo:
        return []
    n = len(key)
    cand = np.flatnonzero(arr[lo : hi + 1] == key[0]) + lo
    want = np.asarray(key, dtype=arr.dtype)
    return [int(j) for j in cand if np.array_equal(arr[j : j + n], want)]


def k4v_draft(tokens: list[int], sampled: int, size_n: int, size_m: int, min_hits: int, state: K4vState) -> list[int]:
    """common_ngram_map_draft with key_only false; `tokens` is the context before `sampled`."""
    n, m = size_n, size_m
    state.last = None
    cur = len(tokens)
    if cur < 2 * n + m:
        return []
    key = [*tokens[cur - n + 1 :], sampled]
    arr = np.asarray(tokens, dtype=np.int64)
    found = _starts(arr, key, 1, cur - n - m - 1)  # as ngram-map-k (position 0 means none in llama.cpp)
    if not found:
        return []
    match = found[-1]
    k = tuple(key)
    ks = state.keys.get(k)
    if ks is None:
        ks = state.keys[k] = KeyStats([Value(n_accepted=m) for _ in range(MAX_VALUES)])
    ks.key_num = min(ks.key_num + 1, MAX_COUNT)
    if ks.key_num < min_hits:
        return []
    for i in _starts(arr, key, ks.stat_idx, match):  # from stat_idx inclusive, as llama.cpp
        begin = i + n
        for v in ks.values:
            if v.idx == 0:
                v.idx, v.num, v.n_accepted = begin, 0, m
            elif tokens[begin : begin + m] != tokens[v.idx : v.idx + m]:
                continue
            v.num = min(v.num + 1, MAX_COUNT)
            break
    ks.stat_idx = match
    nums = [v.num for v in ks.values]
    slot = max(range(MAX_VALUES), key=lambda s: (nums[s], -s))  # first of the most frequent
    others = sum(nums) - nums[slot]
    if others > 0 and nums[slot] < 2 * others:
        return []
    state.last = (k, slot)
    take = min(m, ks.values[slot].n_accepted)
    return [int(t) for t in tokens[match + n : match + n + take]]


def k4v_accepted(state: K4vState, n_accepted: int) -> None:
    """common_ngram_map_accept: the chosen follower's next draft is this long."""
    if state.last is not None:
        key, slot = state.last
        state.keys[key].values[slot].n_accepted = n_accepted
        state.last = None
