"""The infill sampler for fill-in-the-middle: merge tokens that are prefixes of each other,
drop unlikely ones, and end the fill (EOG) when text tokens are not clearly ahead.

Port of llama_sampler_infill_apply in llama.cpp's src/llama-sampler.cpp. Token texts come
from the vocabulary pieces (llama.cpp compares pieces rendered without special tokens; a
special token's piece here is its text, which rarely prefixes anything else).

llama.cpp merges by visiting every pair of candidates (vocabulary squared). Here the
outcome of that loop is computed from the prefix tree of the pieces (`_merge_by_groups`:
NumPy passes over the candidates, the tree built once per vocabulary); only where exact
probability ties make its reasoning inapplicable does the pairwise loop run, visiting
just the pairs where one piece prefixes the other.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pyllama.sampling.candidates import Candidates, softmax
from pyllama.sampling.vocab_cache import VocabCache


def infill(c: Candidates, eog_ids: frozenset[int], pieces: Sequence[bytes], end_token: int) -> Candidates:
    c = softmax(c, do_sort=True)
    probs = c.probs
    assert probs is not None
    probs = probs.astype(np.float32, copy=True)
    logits = c.logits.copy()
    is_eog = np.isin(c.ids, np.fromiter(eog_ids, dtype=np.int64, count=len(eog_ids)))
    p_eog = float(np.cumsum(probs[is_eog], dtype=np.float32)[-1]) if is_eog.any() else 0.0
    p_txt = float(np.cumsum(probs[~is_eog], dtype=np.float32)[-1]) if (~is_eog).any() else 0.0
    if 3 * p_eog * c.size > p_txt:  # text is not clearly more likely: keep only the EOG tokens
        eog_at = np.flatnonzero(is_eog)
        out = c.take(eog_at, sorted=True)
        out.probs = (probs[eog_at] / np.float32(probs[eog_at].sum())).astype(np.float32)
        return out
    if not _merge_by_groups(c.ids, pieces, probs, logits):
        _merge_prefixes(c.ids.tolist(), pieces, probs, logits)
    keep: list[int] = np.flatnonzero((probs >= 0.2) | is_eog).tolist()
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
    """The fallback: llama.cpp's pairwise loop (for i0, for i1: if piece i0 is a prefix of
    piece i1, merge the less likely into the more likely), visiting only the pairs where the prefix holds:
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


class _Tree:
    """The prefix tree as ranges: in the vocabulary sorted by piece, the tokens whose piece
    starts with token t's piece are the run place[t]:end[t] (t first), built once per vocabulary."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = pieces
        _order, place, end = _prefix_ranges(pieces)
        self.place = np.asarray(place, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)
        self.length = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        self.duplicates = len(set(pieces)) != len(pieces)


_TREES = VocabCache(_Tree)


def _range_min(values: npt.NDArray[np.int64], lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> np.ndarray:
    """min(values[lo[i]:hi[i]]) for every i (hi > lo), by a sparse table: log2(n) passes."""
    levels = [values]
    width = 1
    while 2 * width <= values.size:
        last = levels[-1]
        levels.append(np.minimum(last[:-width], last[width:]))
        width *= 2
    span = hi - lo
    k = np.frexp(span.astype(np.float64))[1].astype(np.int64) - 1  # floor(log2(span)), exact
    out = np.empty(span.size, dtype=np.int64)
    for level in np.flatnonzero(np.bincount(k)).tolist():
        sel = np.flatnonzero(k == level)
        table = levels[level]
        out[sel] = np.minimum(table[lo[sel]], table[hi[sel] - (1 << level)])
    return out


def _merge_by_groups(ids: np.ndarray, pieces: Sequence[bytes], probs: np.ndarray, logits: np.ndarray) -> bool:
    """The outcome of llama.cpp's pairwise merge loop, found from the prefix tree instead of
    by visiting pairs; False (nothing changed) where its reasoning does not hold.

    Candidates are in descending probability, and the loop visits them in that order
    (their turn). No token gains probability before its turn (a prefix visiting it earlier
    is at least as likely, and only a strictly likelier token takes the other's mass).
    So a token that comes before everything below it in the tree (a "leader") takes, at
    its turn, the mass of its whole subtree, in candidate order; a token above every
    leader that has something earlier below it meets that earliest one first and, being
    strictly less likely, gives it its mass. The earliest token below any token is a
    leader, so every token's mass ends in one topmost leader, added in a known order.
    Exact ties between such a token and the leader it meets, and vocabularies with two
    equal pieces, break that reasoning: the caller then runs the pairwise loop.
    """
    tree = _TREES.get(pieces)
    n_vocab = len(pieces)
    n = ids.size
    if tree.duplicates or n == 0:
        return False
    pos = np.arange(n, dtype=np.int64)
    tok = ids.astype(np.int64)
    valid = (tok >= 0) & (tok < n_vocab)
    length = np.zeros(n, dtype=np.int64)
    length[valid] = tree.length[tok[valid]]
    alive = valid & (logits != -np.inf) & (length > 0)
    nodes = pos[alive]
    if nodes.size == 0:
        return True  # nothing that could merge
    lo, hi = tree.place[tok[nodes]], tree.end[tok[nodes]]
    slot = np.full(n_vocab, n, dtype=np.int64)  # sorted place -> candidate position (n: none)
    slot[lo] = nodes
    first = np.full(n, n, dtype=np.int64)  # the earliest position in each subtree
    first[nodes] = _range_min(slot, lo, hi)
    is_leader = first[nodes] == nodes
    # the topmost leader at or above each node: the outermost leader range around it
    lead_lo, lead_hi, leaders = lo[is_leader], hi[is_leader], nodes[is_leader]
    by_start = np.argsort(lead_lo)
    lead_lo, lead_hi, leaders = lead_lo[by_start], lead_hi[by_start], leaders[by_start]
    reach = np.maximum.accumulate(lead_hi) if lead_hi.size else lead_hi
    outer = np.ones(lead_lo.size, dtype=np.bool_)
    outer[1:] = lead_lo[1:] >= reach[:-1]
    out_lo, out_hi, out_leader = lead_lo[outer], lead_hi[outer], leaders[outer]
    cover = np.zeros(n_vocab + 1, dtype=np.int64)  # the outer ranges are disjoint: label them
    cover[out_lo] = out_leader + 1
    cover[out_hi] -= out_leader + 1
    top = np.full(n, -1, dtype=np.int64)
    top[nodes] = np.cumsum(cover)[lo] - 1
    upper = nodes[top[nodes] < 0]  # above every leader: gives its mass to its subtree's earliest
    group = top.copy()
    group[upper] = first[upper]
    phase = np.where(top[nodes] < 0, 2, np.where(nodes == group[nodes], 0, 1))
    order = nodes[np.argsort((group[nodes] * 3 + phase) * n + nodes)]  # by group, phase, position
    grouped = group[order]
    bounds = np.flatnonzero(np.diff(grouped)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [order.size]))
    totals = _group_sums(probs[order], ordered_phase=np.where(top[order] < 0, 2, 0), starts=starts, ends=ends)
    if totals is None:
        return False  # a tie: the less likely token would not give way
    merged = order[group[order] != order]
    probs[merged] = 0.0
    probs[order[starts]] = totals
    logits[merged] = -np.inf
    return True


_SHORT = 16  # groups up to this size are summed side by side, longer ones one by one


def _group_sums(
    values: npt.NDArray[np.float32], ordered_phase: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> npt.NDArray[np.float32] | None:
    """Each group's float32 sum, added left to right (the loop's order of `+=`); None when
    a token of phase 2 meets a running sum that is not strictly larger than its own mass."""
    sizes = ends - starts
    acc: npt.NDArray[np.float32] = values[starts].astype(np.float32, copy=True)
    groups = np.flatnonzero((sizes > 1) & (sizes <= _SHORT))
    for r in range(1, _SHORT):
        groups = groups[sizes[groups] > r]
        if groups.size == 0:
            break
        at = starts[groups] + r
        v = values[at]
        if np.any((ordered_phase[at] == 2) & ~(acc[groups] > v)):
            return None
        acc[groups] = acc[groups] + v
    for g in np.flatnonzero(sizes > _SHORT).tolist():
        s, e = int(starts[g]), int(ends[g])
        sums = np.cumsum(values[s:e], dtype=np.float32)
        later = ordered_phase[s + 1 : e] == 2
        if later.any() and not bool(np.all(sums[:-1][later] > values[s + 1 : e][later])):
            return None
        acc[g] = sums[-1]
    return acc
