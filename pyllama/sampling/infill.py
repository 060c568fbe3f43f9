"""The infill sampler for fill-in-the-middle: merge tokens that are prefixes of each other,
drop unlikely ones, and end the fill (EOG) when text tokens are not clearly ahead.

Port of llama_sampler_infill_apply in llama.cpp's src/llama-sampler.cpp. Token texts come
from the vocabulary pieces (llama.cpp compares pieces rendered without special tokens; a
special token's piece here is its text, which rarely prefixes anything else).
"""

from __future__ import annotations

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
    text = [pieces[t] if 0 <= t < len(pieces) else b"" for t in ids]
    for i0 in range(n):
        for i1 in range(n):
            if logits[i0] == -np.inf:
                break
            if i0 == i1 or logits[i1] == -np.inf:
                continue
            a, b = text[i0], text[i1]
            if a and len(a) <= len(b) and b.startswith(a):  # token i0 is a prefix of token i1
                dst, src = (i1, i0) if probs[i1] > probs[i0] else (i0, i1)
                probs[dst] += probs[src]
                logits[src] = -np.inf
                probs[src] = 0.0
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
