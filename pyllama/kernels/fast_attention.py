"""Fast numerics' attention: what a batch means for attention, worked out once per forward pass.

Everything every layer would recompute (the causal and sliding-window masks, the cache rows
to write) is done once; a batch of single-token rows from several sequences (batched
decode across server slots) attends in one batched matmul over the cache padded to the
longest sequence, instead of a Python loop over sequences per layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.batch import Batch
from pyllama.kv_cache import KVCache
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
f16, f32 = np.float16, np.float32
# Scores of one attention call are kept under this many float32 values (query blocking).
MAX_SCORES = 1 << 23
# NumPy >= 2.2's matvec gufunc: a decode step's scores (Hkv, g, L) in a third of the time of
# matmul over transposed keys (docs/performance.md). Pyodide's NumPy 2.0 has none.
MATVEC: Any = getattr(np, "matvec", None)


def _bmm(a: F32, b: F32, backend: MatmulBackend) -> F32:
    """Batched a @ b (the backend's fastest form: einsum without BLAS)."""
    if backend == "einsum":
        out: F32 = np.einsum("...ik,...kj->...ij", a, b)
        return out
    prod: F32 = np.matmul(a, b)
    return prod


class AttentionPlan:
    """What every layer's attention needs to know about one batch, computed once."""

    def __init__(self, kv: KVCache, batch: Batch, causal: bool = True, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        self.kv = kv
        self.backend = backend
        self.causal = causal
        self.chunks = [(c.seq, c.pos, len(c.tokens)) for c in batch.chunks]
        self.positions: I64 = np.fromiter(
            (p + i for _, p, n in self.chunks for i in range(n)), dtype=np.int64, count=sum(n for *_, n in self.chunks)
        )
        float_cache = kv.type_k != "q8_0" and kv.type_v != "q8_0"
        # Every row a different sequence's next token (decode, one or many slots): one
        # batched attention over the cache padded to the longest of them.
        self.batched = float_cache and all(n == 1 for *_, n in self.chunks)
        self._masks: dict[tuple[int, int], F32 | None] = {}
        if self.batched:
            seqs = [s for s, _, _ in self.chunks]
            self.seq_ids: I64 = np.asarray(seqs, dtype=np.int64)
            self.pos_ids: I64 = np.asarray([p for _, p, _ in self.chunks], dtype=np.int64)
            lo = seqs[0]
            self.seq_sel: slice | I64 = slice(lo, lo + len(seqs)) if seqs == list(range(lo, lo + len(seqs))) else self.seq_ids
            self.n_kv = int(self.pos_ids.max()) + 1
            self.min_pos = int(self.pos_ids.min())

    def _mask(self, key: int, q_pos: I64, n_kv: int, window: int, first: int = 0) -> F32 | None:
        """Additive mask (rows, n_kv - first) over keys first..n_kv-1: 0 where a key is
        visible, -inf elsewhere; None if all are visible."""
        cache_key = (key, window)
        if cache_key in self._masks:
            return self._masks[cache_key]
        k_pos = np.arange(first, n_kv, dtype=np.int64)
        diff = q_pos[:, None] - k_pos[None, :]
        hidden = np.zeros(diff.shape, dtype=bool)
        if self.causal:
            hidden |= diff < 0
        if window > 0:
            hidden |= diff >= window
        mask = None
        if hidden.any():
            mask = np.zeros(diff.shape, dtype=f32)
            mask[hidden] = -np.inf
        self._masks[cache_key] = mask
        return mask

    def attend(
        self, layer: int, q: F32, k: F32, v: F32, scale: float, *, window: int = 0, softcap: float = 0.0
    ) -> F32:
        """Store k/v in the cache and attend: q (T, H, Dh), k (T, Hkv, Dh), v (T, Hkv, Dv) -> (T, H*Dv)."""
        t, h, dh = q.shape
        hkv, dv = v.shape[1], v.shape[2]
        g = h // hkv
        if self.batched:
            ka, va = self.kv.k[layer], self.kv.v[layer]
            kc, vc = ka.q, va.q
            if ka.kind == "f16":  # rounded like the f16 cache it is, whatever holds it
                k = k.astype(f16)
            if va.kind == "f16":
                v = v.astype(f16)
            if t == 1:
                return self._attend_one(kc, vc, q, k, v, scale, window, softcap)
            kc[self.seq_ids, :, self.pos_ids, :] = k
            vc[self.seq_ids, :, self.pos_ids, :] = v
            # Views when the cache holds float32 (fast numerics widen f16 caches): no
            # per-layer copy of the whole cache (KVCache's docstring has the numbers).
            # A sliding-window layer reads only the keys some row can still see (Gemma 3
            # at depth 1500: 512 instead of 1500 in 15 of its 18 layers).
            first = max(0, self.min_pos - window + 1) if window > 0 else 0
            keys = kc[self.seq_sel, :, first : self.n_kv]  # (B, Hkv, L, Dh)
            vals = vc[self.seq_sel, :, first : self.n_kv]
            if keys.dtype != f32:
                keys = keys.astype(f32)
            if vals.dtype != f32:
                vals = vals.astype(f32)
            qg: F32 = q.reshape(t, hkv, g, dh)
            if scale != 1.0:  # 1.0: the block scaled the queries already (Gemma 3)
                qg = np.multiply(qg, f32(scale))
            mask = self._mask(-1, self.pos_ids, self.n_kv, window, first)
            out = _softmax_av(_bmm(qg, keys.transpose(0, 1, 3, 2), self.backend), vals,
                              None if mask is None else mask[:, None, None, :], softcap, self.backend)
            return out.reshape(t, h * dv)
        result = np.empty((t, h * dv), dtype=f32)
        start = 0
        for ci, (seq, pos, n) in enumerate(self.chunks):
            rows = slice(start, start + n)
            self.kv.write(layer, seq, pos, k[rows], v[rows])
            end = pos + n
            keys = self.kv.keys(layer, seq, end).transpose(0, 2, 1)  # (Hkv, Dh, S)
            vals = self.kv.values(layer, seq, end)  # (Hkv, S, Dv)
            mask = self._mask(ci, self.positions[rows], end, window)
            qs = q[rows] * f32(scale) if scale != 1.0 else q[rows]
            step = max(1, MAX_SCORES // max(1, h * end))
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                m = r1 - r0
                # (m, Hkv, g, Dh) -> (Hkv, g*m, Dh): one matmul per KV head, not per query head.
                qg = qs[r0:r1].reshape(m, hkv, g, dh).transpose(1, 2, 0, 3).reshape(hkv, g * m, dh)
                scores = _bmm(qg, keys, self.backend).reshape(hkv, g, m, end)
                o = _softmax_av(scores, vals, None if mask is None else mask[r0:r1], softcap, self.backend,
                                (hkv, g * m, end))
                result[start + r0 : start + r1] = o.reshape(hkv, g, m, dv).transpose(2, 0, 1, 3).reshape(m, h * dv)
            start += n
        return result

    def _attend_one(self, kc: F32, vc: F32, q: F32, k: F32, v: F32, scale: float, window: int,
                    softcap: float) -> F32:
        """One sequence's next token (a decode step): the cache rows it sees are exactly
        first..pos, so there is no mask, no padding and no batch axis; about half the NumPy
        calls of the batched path, which matters 30 times per token."""
        seq, pos, _ = self.chunks[0]
        kc[seq, :, pos] = k  # (1, Hkv, Dh) into (Hkv, Dh)
        vc[seq, :, pos] = v
        first = max(0, pos - window + 1) if window > 0 else 0
        keys = kc[seq, :, first : pos + 1]  # (Hkv, L, Dh)
        vals = vc[seq, :, first : pos + 1]
        if keys.dtype != f32:
            keys = keys.astype(f32)
        if vals.dtype != f32:
            vals = vals.astype(f32)
        hkv, dh = keys.shape[0], keys.shape[2]
        qg = q.reshape(hkv, -1, dh)
        if MATVEC is not None and self.backend == "blas":  # each key row . each query of its group
            scores: F32 = MATVEC(keys[:, None], qg)  # (Hkv, g, L)
        else:
            scores = _bmm(qg, keys.transpose(0, 2, 1), self.backend)
        if scale != 1.0:  # 1.0: the scale is in the queries already (folded into Wq, or Gemma 3)
            scores *= scale
        if softcap > 0.0:
            scores *= 1.0 / softcap
            np.tanh(scores, out=scores)
            scores *= softcap
        scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        total = np.add.reduce(scores, axis=-1, keepdims=True)
        out = _bmm(scores, vals, self.backend)  # (Hkv, g, Dv)
        out /= total
        return out.reshape(1, -1)


def _softmax_av(scores: F32, vals: F32, mask: F32 | None, softcap: float, backend: MatmulBackend,
                flat: tuple[int, ...] | None = None) -> F32:
    """softmax(scores + mask) @ vals, normalising after the product (a smaller array).

    `flat`: the shape to multiply in (scores reshaped so that each batch item is one
    bigger matmul), after the mask has been broadcast over the unflattened shape.
    """
    if softcap > 0.0:
        scores *= f32(1.0 / softcap)
        np.tanh(scores, out=scores)
        scores *= f32(softcap)
    if mask is not None:
        scores += mask
    scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)  # the ufunc itself: no wrapper call
    np.exp(scores, out=scores)
    if flat is not None:
        scores = scores.reshape(flat)
    total = np.add.reduce(scores, axis=-1, keepdims=True)
    out = _bmm(scores, vals, backend)
    out /= total
    return out
