"""The infill sampler for fill-in-the-middle: merge tokens that are prefixes of each other,
drop unlikely ones, and end the fill (EOG) when text tokens are not clearly ahead.

Port of llama_sampler_infill_apply in llama.cpp's src/llama-sampler.cpp. Token texts come
from the vocabulary pieces (llama.cpp compares pieces rendered without special tokens; a
special token's piece here is its text, which rarely prefixes anything else).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from pyllama.sampling.candidates import Candidates, softmax


def infill(c: Candidates, eog_ids: frozenset[int], pieces: Sequence[bytes], end_token: int) -> Candidates:
    c = softmax(c, do_sort=True)
    probs = c.probs
    assert probs is not None
    probs = probs.astype(np.float32, copy=True)
    logits = c.logits.copy()
    ids = c.ids.tolist()
    is_eog = np.asarray([t in eog_ids for t in ids], dtype=np.bool_)
    p_eog = float(np.cumsum(probs[is_eog], dtype=np.float32)[-1]) if is_eog.any() else 0.0
    p_txt = float(np.cumsum(probs[~is_eog], dtype=np.float32)[-1]) if (~is_eog).any() else 0.0
    if 3 * p_eog * c.size > p_txt:  # text is not clearly more likely: keep only the EOG tokens
        eog_at = np.flatnonzero(is_eog)
        out = c.take(eog_at, sorted=True)
        out.probs = (probs[eog_at] / np.float32(probs[eog_at].sum())).astype(np.float32)
        return out
    n = c.size
    _merge_prefixes(ids, pieces, probs, logits)
    keep: list[int] = [i for i in range(n) if probs[i] >= 0.2 or is_eog[i]]
    n_text = sum(1 for i in keep if not is_eog[i])
    if n_text == 0:
        return Candidates(np.asarray([end_token], dtype=np.int32), np.ones(1, dtype=np.float32), None, True)
    p = probs[keep] / np.float32(probs[keep].sum())
    thold = 1.0 / (n_text + 1)
    second = [k for k, i in enumerate(keep) if p[k] >= thold or is_eog[i]]
    kept = np.asarray([keep[k] for k in second], dtype=np.intp)
    out = Candidates(c.ids[kept], logits[kept], None, True)
    out.probs = (p[second] / np.float32(p[second].sum())).astype(np.float32)
    return out


_ORDER: dict[int, tuple[Sequence[bytes], list[int], list[int], list[int]]] = {}


def _prefix_ranges(pieces: Sequence[bytes]) -> tuple[list[int], list[int], list[int]]:
    """The vocabulary sorted by piece, each token's place in that order, and the end of the
    run of pieces that start with its piece (those form one run in sorted order)."""
    hit = _ORDER.get(id(pieces))
    if hit is not None and hit[0] is pieces:
        return hit[1], hit[2], hit[3]
    order = sorted(range(len(pieces)), key=lambda t: pieces[t])
    texts = [pieces[t] for t in order]
    place = [0] * len(pieces)
    for k, t in enumerate(order):
        place[t] = k
    end = [0] * len(pieces)
    for k, t in enumerate(order):
        a = texts[k]
        end[t] = bisect.bisect_left(texts, a + b"\xff" * 8, k) if a else k
        while end[t] < len(texts) and texts[end[t]].startswith(a):  # pieces with 0xff bytes after `a`
            end[t] += 1
    if len(_ORDER) > 4:
        _ORDER.clear()
    _ORDER[id(pieces)] = (pieces, order, place, end)
    return order, place, end


def _merge_prefixes(ids: list[int], pieces: Sequence[bytes], probs: np.ndarray, logits: np.ndarray) -> None:
    """llama.cpp's pairwise loop (for i0, for i1: if piece i0 is a prefix of piece i1, merge
    the less likely into the more likely), visiting only the pairs where the prefix holds:
    those i1 are one run of the vocabulary sorted by piece, so the work is the number of
    (token, longer token with that prefix) pairs, not candidates squared. Same order, same
    sums, same result."""
    order, place, end = _prefix_ranges(pieces)
    cand = {t: i for i, t in enumerate(ids) if 0 <= t < len(pieces)}
    for i0, t0 in enumerate(ids):
        if t0 not in cand or not pieces[t0] or logits[i0] == -np.inf:
            continue
        run = order[place[t0]:end[t0]]
        matches = sorted(cand[t] for t in run if t in cand)
        a = pieces[t0]
        # pieces equal to `a` sort before it too (duplicates): include them
        k = place[t0] - 1
        while k >= 0 and pieces[order[k]] == a:
            if order[k] in cand:
                matches.append(cand[order[k]])
            k -= 1
        matches.sort()
        for i1 in matches:
            if logits[i0] == -np.inf:
                break
            if i0 == i1 or logits[i1] == -np.inf:
                continue
            dst, src = (i1, i0) if probs[i1] > probs[i0] else (i0, i1)
            probs[dst] += probs[src]
            logits[src] = -np.inf
            probs[src] = 0.0
