"""The fast-numerics forward pass: the same network in far fewer NumPy calls per layer.

WHY: one decode step of SmolLM2-135M multiplies ~540 MB of float32 weights (~27 ms at
this machine's ~20 GB/s), but the exact-mode layer code around those matmuls is ~40 small
NumPy calls per layer of a few microseconds each, and over 30 layers that overhead cost
as much as the matmuls themselves (measured: 23 of 63 ms CPU per token). With exact
numerics off (`numerics.EXACT` False, the default "fast" mode) llama, gemma3 and the
Llama-shaped architectures of qwen2.py (qwen2/3, phi3, Llama MoE, gemma 1/2) route
through here instead:

- `FusedLinear`: Q/K/V, and gate/up, as ONE matmul (the dense parts become views of the
  fused matrix, so memory does not grow).
- Norms, RoPE and activations in a handful of plain float32 ufuncs (RoPE on adjacent
  pairs is one complex64 multiply by a precomputed e^{i*theta} table).
- `AttentionPlan`: everything about the batch that every layer would recompute (causal
  and sliding-window masks, the cache rows to write) is done once per forward pass; a
  batch of single-token rows from several sequences (batched decode across server slots)
  attends in one batched matmul over the cache padded to the longest sequence, instead
  of a Python loop over sequences per layer.

Results differ from exact mode in that the matmul inputs stay float32 instead of being
rounded to ggml's Q8 blocks (ROUND_ACTIVATIONS below says why) and in float32 summation
order; the perplexity and synthetic-model tests bound the difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType

from pyllama import numerics
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear, default_scratch
from pyllama.models.base import Batch, release_file_pages
from pyllama.numerics import VEC_DOT_TYPE, quantize_q8_k
from pyllama.ops import RopeTable
from pyllama.quant import PackedTensor, dequantize, repack
from pyllama.quant.layout import RowRange
from pyllama.quant.matmul import matmul, matmul_backend, matmul_t

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
f16, f32 = np.float16, np.float32
QK = 32
# Dense parts at least this big are dequantized again from the file into the fused layout
# instead of copied (no transient second copy); float files are copied (nothing to redo).
REDEQUANT_BYTES = 32 << 20
FLOAT_FILE_TYPES = frozenset({GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16})
# Scores of one attention call are kept under this many float32 values (query blocking).
MAX_SCORES = 1 << 23
# Whether fast numerics round matmul inputs the way ggml does (Q8_0/Q8_1/Q8_K blocks).
# Off: measured on SmolLM2's chat prompt, float32 inputs land closer to llama.cpp (max logit
# error 0.61 against 1.0-1.2, max probability error 0.012 against 0.014-0.019) and, above
# all, a row's logits no longer depend on the batch it was computed in (0.005 against
# 0.67-0.82: the int8 rounding turns BLAS's last-bit differences into flipped codes). So a
# prompt gives the same text cached or not, alone or batched with other slots. Exact
# numerics keep ggml's rounding bit for bit.
ROUND_ACTIVATIONS = False


def _act_kind(lin: Linear) -> str | None:
    """How ggml quantizes the activations multiplied by this weight (None: not at all)."""
    if lin.info.ggml_type == GGMLQuantizationType.F16:
        return "f16"
    return VEC_DOT_TYPE.get(lin.info.ggml_type)


def quantize_activations(x: F32, kind: str | None) -> F32:
    """What ggml's activation quantization makes of x (T, n), in ~10 NumPy calls.

    Q8_0/Q8_1 blocks of 32: d = amax/127 rounded to float16, q = rint(x * 127/amax),
    x' = q * d (numerics.quantize_q8). Q8_1's float16 block sum `s` only corrects the
    min term of Q4_1/Q5_1 weights by its own f16 rounding (~2^-11 of a block sum, ten
    times below the quantization error itself); the fast path leaves it out, which
    saved 8 of 18 NumPy calls per quantization.
    """
    if kind is None:
        return x
    if kind == "f16":
        return x.astype(f16).astype(f32)
    t, n = x.shape
    if kind == "q8_k":
        qk, dk = quantize_q8_k(x)
        qk *= dk[..., None]
        return qk.reshape(t, n)
    xb = x.reshape(t, n // QK, QK)
    amax = np.abs(xb).max(axis=-1)
    q: F32 = xb * (f32(127.0) / np.maximum(amax, f32(1e-30)))[..., None]  # all-zero blocks stay 0
    np.rint(q, out=q)
    q *= (amax / f32(127.0)).astype(f16).astype(f32)[..., None]
    return q.reshape(t, n)


class FusedLinear:
    """Several weights applied to the same input as one matmul: y = [x W1^T | x W2^T | ...].

    Parts must share the input width. Activations are quantized once per distinct ggml
    activation type (once in total for SmolLM2 and Gemma 3, whose fused parts agree).
    Dense parts are concatenated and each part's `weight` rebound to its row view, so
    the exact path (which runs the parts) and this one share one copy of the weights.
    Biases (may be None per part) are concatenated too.
    """

    def __init__(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None) -> None:
        if not parts or any(p.n_in != parts[0].n_in for p in parts):
            raise ValueError("FusedLinear needs parts of one input width")
        self.parts = list(parts)
        self.n_in = parts[0].n_in
        self.n_out = sum(p.n_out for p in parts)
        self.bounds: list[tuple[int, int]] = []
        start = 0
        for p in parts:
            self.bounds.append((start, start + p.n_out))
            start += p.n_out
        kinds = [_act_kind(p) if ROUND_ACTIVATIONS else None for p in parts]
        self.kinds = kinds
        self.uniform = all(k == kinds[0] for k in kinds)
        # Dense weights: one (n_in, n_out) C-contiguous matrix, x @ wt. With OpenBLAS that
        # layout streams the weights once for a few rows too: measured on 40 distinct
        # 3072x576 matrices, 1 row 34 vs 52 ms, 4 rows 70 vs 92-125 ms, 8 rows 79 vs 135 ms
        # for x @ W.T; the 49152x576 head 12.8 vs 17.6 ms (1 row) and 26.5 vs 54 ms (4).
        # Without BLAS (Pyodide) the file's row-major (n_out, n_in) layout is kept.
        self.weight: F32 | None = None  # row-major fused weight (einsum backend)
        self.wt: F32 | None = None  # transposed fused weight (BLAS backend)
        if all(p.weight is not None for p in parts):
            dense: list[F32 | None] = [p.weight for p in parts]
            if matmul_backend() == "blas":
                # A big quantized part (a head or tied embedding: Gemma's is 671 MB) is
                # dropped first and dequantized again from the file straight into the
                # transposed matrix, so load never holds two float32 copies of it.
                redo = [
                    p.weight is not None and p.weight.nbytes >= REDEQUANT_BYTES and p.info.ggml_type not in FLOAT_FILE_TYPES
                    for p in parts
                ]
                for p, again in zip(parts, redo, strict=True):
                    if again:
                        p.weight = None
                dense = [None if again else w for w, again in zip(dense, redo, strict=True)]
                wt = np.empty((self.n_in, self.n_out), dtype=f32)
                for p, w, (a, b) in zip(parts, dense, self.bounds, strict=True):
                    if w is None:
                        rows = np.asarray(p.info.data).reshape(p.n_out, -1)
                        step = max(64, (1 << 22) // self.n_in)
                        for r in range(0, b - a, step):
                            k = min(step, b - a - r)
                            wt[:, a + r : a + r + k] = dequantize(rows[r : r + k], p.info.ggml_type, (k, self.n_in)).T
                        release_file_pages(p.info.data)
                    else:
                        for r in range(0, b - a, 64):  # transposed in blocks: 2x faster than whole
                            wt[:, a + r : min(b, a + r + 64)] = w[r : r + 64].T
                    p.weight = wt[:, a:b].T  # the part (exact path, embeddings) reads the same memory
                self.wt = wt
            elif len(parts) == 1:
                self.weight = parts[0].weight
            else:
                w = np.concatenate([p.weight for p in parts if p.weight is not None], axis=0)
                for p, (a, b) in zip(parts, self.bounds, strict=True):
                    p.weight = w[a:b]
                self.weight = w
        # Packed parts of one type: repacked as ONE tensor from the file's bytes (rows are
        # independent blocks), so a call runs one tile loop instead of one per part
        # (SmolLM2, one token: Q/K/V + gate/up over 30 layers 22.5 -> 17.8 ms).
        self.packed: PackedTensor | None = None
        if (
            len(parts) > 1
            and all(p.packed is not None and p.weight is None for p in parts)
            and len({p.info.ggml_type for p in parts}) == 1
        ):
            raw = np.concatenate([np.asarray(p.info.data).reshape(-1) for p in parts])
            packed = repack(raw, parts[0].info.ggml_type, (self.n_out, self.n_in))
            for p, (a, b) in zip(parts, self.bounds, strict=True):
                p.packed = RowRange(packed, a, b)
                release_file_pages(p.info.data)
            self.packed = packed
        elif len(parts) == 1 and parts[0].weight is None:
            self.packed = parts[0].packed
        self.bias: F32 | None = None
        if biases is not None and any(b is not None for b in biases):
            self.bias = np.concatenate(
                [b if b is not None else np.zeros(p.n_out, f32) for p, b in zip(parts, biases, strict=True)]
            ).astype(f32)

    def _part_into(self, i: int, xq: F32, y: F32) -> None:
        p = self.parts[i]
        a, b = self.bounds[i]
        if p.weight is not None:
            y[:, a:b] = matmul_t(xq, p.weight)
        else:
            assert p.packed is not None
            pool = p.scratch if p.scratch is not None else default_scratch()
            p.packed.matmul_t_into(xq, y[:, a:b], pool.get(p.packed.scratch_size()))

    def __call__(self, x: F32) -> F32:
        """x (T, n_in) float32 -> (T, n_out)."""
        if self.wt is not None and self.uniform and self.kinds[0] is None and self.bias is None:
            dense: F32 = np.matmul(x, self.wt)  # the common dense case, in one call
            return dense
        x = np.ascontiguousarray(x, dtype=f32)
        if self.uniform and self.wt is not None:
            y: F32 = matmul(quantize_activations(x, self.kinds[0]), self.wt)
        elif self.uniform and self.weight is not None:
            y = matmul_t(quantize_activations(x, self.kinds[0]), self.weight)
        elif self.uniform and self.packed is not None:
            y = np.empty((x.shape[0], self.n_out), dtype=f32)
            scratch = self.parts[0].scratch if self.parts[0].scratch is not None else default_scratch()
            self.packed.matmul_t_into(quantize_activations(x, self.kinds[0]), y, scratch.get(self.packed.scratch_size()))
        else:
            y = np.empty((x.shape[0], self.n_out), dtype=f32)
            done: dict[str | None, F32] = {}
            for i, kind in enumerate(self.kinds):
                if kind not in done:
                    done[kind] = quantize_activations(x, kind)
                self._part_into(i, done[kind], y)
        if self.bias is not None:
            y += self.bias
        return y


# -- elementwise pieces ------------------------------------------------------------------------


def rms_norm(x: F32, weight: F32 | None, eps: float) -> F32:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, in float32 (a new array).

    One row (a decode step of one sequence) takes a BLAS dot and Python arithmetic for
    the scale: 3 NumPy calls instead of 6 (11 -> 5 us, 60 norms per SmolLM2 token).
    """
    if x.ndim == 2 and x.shape[0] == 1:
        row = x[0]
        inv = f32(1.0 / math.sqrt(float(np.dot(row, row)) / x.shape[1] + eps))
        y1: F32 = np.multiply(x, inv)
        if weight is not None:
            y1 *= weight
        return y1
    ms = np.einsum("...i,...i->...", x, x)
    ms *= f32(1.0 / x.shape[-1])
    ms += f32(eps)
    np.sqrt(ms, out=ms)
    y: F32 = x / ms[..., None]
    if weight is not None:
        y *= weight
    return y


def swiglu(gu: F32, n_ff: int) -> F32:
    """silu(gate) * up for gu = [gate | up] (T, 2*n_ff): gate / (1 + exp(-gate)) * up.

    exp's argument is capped at 80 (silu is then -0.0 to float32 precision) so it never
    overflows; float32 exp is SIMD in NumPy, tanh is not (5x slower per element here).
    """
    g = gu[:, :n_ff]
    t = np.negative(g)
    np.minimum(t, f32(80.0), out=t)
    np.exp(t, out=t)
    t += f32(1.0)
    np.divide(g, t, out=t)
    t *= gu[:, n_ff:]
    return t


def geglu(gu: F32, n_ff: int) -> F32:
    """gelu(gate) * up for gu = [gate | up], GELU as ggml's CPU backend computes it: a
    lookup of the gate rounded to float16 in numerics' 65536-entry table (identical to
    numerics.gelu: below -10 the table already holds -0.0, from 10 on gelu(x) = x)."""
    g = gu[:, :n_ff]
    t: F32 = numerics.gelu_table()[g.astype(f16).view(np.uint16)]
    np.copyto(t, g, where=g >= f32(10.0))
    t *= gu[:, n_ff:]
    return t


class FastRope:
    """RoPE from a RopeTable's cos/sin, applied in place in a few calls.

    Adjacent pairs (llama's "normal" mode): x viewed as complex64 times e^{i*theta}, one
    multiply. NeoX halves: four multiplies on the two half views.
    """

    def __init__(self, table: RopeTable) -> None:
        self.n_rot = table.n_rot
        self.neox = table.rope.neox
        self.cos = table.cos
        self.sin = table.sin
        self.rot = (table.cos + 1j * table.sin).astype(np.complex64) if not self.neox else None
        # The rows of the last positions array seen: every layer of a forward pass rotates by
        # the same positions (AttentionPlan.positions), so the gather runs once per pass.
        self._last: tuple[I64, np.ndarray[Any, Any]] | None = None

    def apply(self, x: F32, positions: I64) -> None:
        """Rotate x (T, H, Dh), last axis contiguous, in place by each row's position."""
        n = self.n_rot
        if self.rot is not None:
            if self._last is None or self._last[0] is not positions:
                self._last = (positions, self.rot[positions][:, None, :])
            xc = x[..., :n].view(np.complex64)
            xc *= self._last[1]
            return
        half = n // 2
        if self._last is None or self._last[0] is not positions:
            self._last = (positions, np.stack([self.cos[positions][:, None, :], self.sin[positions][:, None, :]]))
        cos, sin = self._last[1]
        x0 = x[..., :half]
        x1 = x[..., half:n]
        a = x0 * cos
        a -= x1 * sin
        x1 *= cos
        x1 += x0 * sin
        x0[...] = a


# -- attention ---------------------------------------------------------------------------------


def _bmm(a: F32, b: F32) -> F32:
    """Batched a @ b (the backend's fastest form: einsum without BLAS)."""
    if matmul_backend() == "einsum":
        out: F32 = np.einsum("...ik,...kj->...ij", a, b)
        return out
    prod: F32 = np.matmul(a, b)
    return prod


class AttentionPlan:
    """What every layer's attention needs to know about one batch, computed once."""

    def __init__(self, kv: KVCache, batch: Batch, causal: bool = True) -> None:
        self.kv = kv
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
                seq, pos, _ = self.chunks[0]
                kc[seq, :, pos, :] = k[0]
                vc[seq, :, pos, :] = v[0]
            else:
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
            qg = np.multiply(q.reshape(t, hkv, g, dh), f32(scale))
            mask = self._mask(-1, self.pos_ids, self.n_kv, window, first)
            out = _softmax_av(_bmm(qg, keys.transpose(0, 1, 3, 2)), vals, None if mask is None else mask[:, None, None, :], softcap)
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
            qs = q[rows] * f32(scale)
            step = max(1, MAX_SCORES // max(1, h * end))
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                m = r1 - r0
                # (m, Hkv, g, Dh) -> (Hkv, g*m, Dh): one matmul per KV head, not per query head.
                qg = qs[r0:r1].reshape(m, hkv, g, dh).transpose(1, 2, 0, 3).reshape(hkv, g * m, dh)
                scores = _bmm(qg, keys).reshape(hkv, g, m, end)
                o = _softmax_av(scores, vals, None if mask is None else mask[r0:r1], softcap, (hkv, g * m, end))
                result[start + r0 : start + r1] = o.reshape(hkv, g, m, dv).transpose(2, 0, 1, 3).reshape(m, h * dv)
            start += n
        return result


def _softmax_av(scores: F32, vals: F32, mask: F32 | None, softcap: float, flat: tuple[int, ...] | None = None) -> F32:
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
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    if flat is not None:
        scores = scores.reshape(flat)
    total = scores.sum(axis=-1, keepdims=True)
    out = _bmm(scores, vals)
    out /= total
    return out
