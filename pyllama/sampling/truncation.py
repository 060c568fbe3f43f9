"""Samplers that cut the candidate list: top-k, top-p, min-p, typical, top-n-sigma, XTC.

Each is a port of the same-named function in llama.cpp's src/llama-sampler.cpp, keeping
its quirks (which paths sort, float32 running sums, `min_keep` rules) so the candidate
order and therefore seeded draws match llama.cpp.
"""

from __future__ import annotations

import math

import numpy as np

from pyllama.sampling.candidates import Candidates, softmax, sort_desc
from pyllama.sampling.rng import MT19937


def top_k(c: Candidates, k: int) -> Candidates:
    """Keep the k highest logits, sorted descending (k <= 0: unchanged)."""
    if k <= 0:
        return c
    k = min(k, c.size)
    if not c.sorted:
        return sort_desc(c, k)
    return c.take(slice(0, k), sorted=True)


def _first_true(mask: np.ndarray) -> int:
    """Index of the first True in `mask`, or -1."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


def top_p(c: Candidates, p: float, min_keep: int) -> Candidates:
    """Nucleus: the smallest prefix (by probability) whose mass reaches p."""
    if p >= 1.0:
        return c
    c = softmax(c, do_sort=False)
    p32 = np.float32(p)
    # llama.cpp first sorts only the top 256 and widens to everything if the mass
    # is not reached there; the result is the same prefix either way.
    ranked = c if c.sorted else sort_desc(c, min(256, c.size) if c.size > 1024 else None)
    assert ranked.probs is not None
    cum = np.cumsum(ranked.probs, dtype=np.float32)
    idx = np.arange(cum.size)
    last = _first_true((cum >= p32) & (idx + 1 >= min_keep))
    if last < 0 and ranked.size < c.size:
        ranked = sort_desc(c)
        assert ranked.probs is not None
        cum = np.cumsum(ranked.probs, dtype=np.float32)
        idx = np.arange(cum.size)
        last = _first_true((cum >= p32) & (idx + 1 >= min_keep))
    n = ranked.size if last < 0 else last + 1
    return ranked.take(slice(0, n), sorted=True)


def min_p(c: Candidates, p: float, min_keep: int) -> Candidates:
    """Keep tokens whose probability is at least p times the top token's."""
    if p <= 0.0 or c.size == 0:
        return c
    log_p = np.float32(math.log(p)) if p > 0 else np.float32(-np.inf)
    if not c.sorted:
        min_logit = np.float32(c.logits.max()) + log_p
        keep = np.flatnonzero(c.logits >= min_logit)
        if keep.size > 0 and keep.size >= min_keep:
            return c.take(keep, sorted=False)
        c = sort_desc(c)
    min_logit = c.logits[0] + log_p
    start = max(1, min_keep)
    cut = _first_true(c.logits[start:] < min_logit)
    n = c.size if cut < 0 else start + cut
    return c.take(slice(0, n), sorted=True)


def typical(c: Candidates, p: float, min_keep: int) -> Candidates:
    """Locally typical sampling: keep tokens whose surprise is closest to the entropy."""
    if p >= 1.0:
        return c
    c = softmax(c, do_sort=True)
    probs = c.probs
    assert probs is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(probs)
        entropy = np.cumsum(-probs * logp, dtype=np.float32)[-1]
        shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(probs[order], dtype=np.float32)
    idx = np.arange(cum.size)
    ok = cum > np.float32(p)
    if min_keep > 0:
        ok &= idx >= min_keep - 1
    last = _first_true(ok)
    n = order.size if last < 0 else last + 1
    return c.take(order[:n], sorted=False)


def top_n_sigma(c: Candidates, n: float) -> Candidates:
    """Mask tokens more than n standard deviations below the top logit (n <= 0: off)."""
    if n <= 0.0 or c.size <= 1:
        return c
    valid = c.logits != -np.inf
    count = int(valid.sum())
    vals = c.logits[valid]
    top = max(float(c.logits[0]), float(vals.max())) if count else float(c.logits[0])
    mean = np.float32(np.cumsum(vals, dtype=np.float32)[-1] / np.float32(count)) if count else np.float32(0)
    std = np.float32(math.sqrt(float(np.sum((vals.astype(np.float64) - mean) ** 2)) / count)) if count else 0.0
    bound = np.float32(top) - np.float32(n) * np.float32(std)
    logits = np.where(c.logits < bound, np.float32(-np.inf), c.logits).astype(np.float32)
    return Candidates(c.ids, logits, c.probs, c.sorted)


def xtc(c: Candidates, probability: float, threshold: float, min_keep: int, rng: MT19937) -> Candidates:
    """Exclude Top Choices: with some probability drop every token above the threshold but the last."""
    if probability <= 0.0 or threshold > 0.5 or c.size < 2:
        return c
    if rng.uniform_float() > probability:
        return c
    c = softmax(c, do_sort=True)
    assert c.probs is not None
    below = np.flatnonzero(c.probs < np.float32(threshold))
    first_below = int(below[0]) if below.size else c.size
    pos_last = max(first_below - 1, 0)
    if c.size - pos_last >= min_keep and pos_last > 0:
        return c.take(slice(pos_last, None), sorted=True)
    return c
