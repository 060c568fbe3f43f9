"""Temperature, plain and dynamic (entropy-scaled), as llama.cpp's temp / temp-ext samplers."""

from __future__ import annotations

import math

import numpy as np

from pyllama.sampling.candidates import Candidates, softmax


def temp(c: Candidates, t: float) -> Candidates:
    """Divide logits by t; t <= 0 keeps only the first highest logit (the rest -> -inf).

    "First" is in the current candidate order, and after any sort that is the lowest
    token id among equal logits: greedy decoding's tie rule.
    """
    if c.size == 0:
        return c
    if t <= 0.0:
        best = int(np.argmax(c.logits))
        logits = np.full(c.size, -np.inf, dtype=np.float32)
        logits[best] = c.logits[best]
        return Candidates(c.ids, logits, c.probs, c.sorted)
    return Candidates(c.ids, (c.logits / np.float32(t)).astype(np.float32), c.probs, c.sorted)


def temp_ext(c: Candidates, t: float, delta: float, exponent: float) -> Candidates:
    """Dynamic temperature: map normalized entropy into [t - delta, t + delta]."""
    if delta <= 0.0:
        if t == 1.0:
            return c  # llama.cpp builds an empty sampler for this case
        return temp(c, t)
    if c.size <= 1:
        return c
    t32, delta32 = np.float32(t), np.float32(delta)
    min_temp = max(np.float32(0), np.float32(t32 - delta32))
    max_temp = np.float32(t32 + delta32)
    max_entropy = np.float32(-math.log(1.0 / c.size))
    c = softmax(c, do_sort=True)
    probs = c.probs
    assert probs is not None
    pos = probs[probs > 0]
    entropy = np.float32(-np.cumsum(pos * np.log(pos), dtype=np.float32)[-1]) if pos.size else np.float32(0)
    # llama.cpp computes this in float32 with powf: an extreme exponent gives inf (a flat
    # distribution), never an error. math.pow would raise OverflowError here.
    with np.errstate(all="ignore"):
        normalized = np.float32(entropy / max_entropy)
        power = np.power(normalized, np.float32(exponent))
        dyn_temp = np.float32(min_temp + np.float32(max_temp - min_temp) * power)
    if not math.isfinite(float(dyn_temp)):  # logit / inf: every finite logit becomes 0
        flat = np.where(np.isfinite(c.logits), np.float32(0), c.logits).astype(np.float32)
        c = Candidates(c.ids, flat, c.probs, c.sorted)
    else:
        c = temp(c, float(dyn_temp))
    shifted = np.exp(c.logits.astype(np.float64) - float(c.logits[0]))
    c.probs = (shifted / shifted.sum()).astype(np.float32)
    return c
