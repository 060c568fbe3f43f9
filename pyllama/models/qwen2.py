"""Qwen 2 / 2.5: Llama's pre-norm block with biases on the Q, K and V projections.

    h   = x + Wo · attn(rope(q), rope(k), v)     with q, k, v = Wqkv·rms_norm(x) + b
    out = h + Wdown · (silu(Wgate·m) * Wup·m)     with m = rms_norm(h)

This file is also the base of the other Llama-shaped architectures here (qwen3 adds
Q/K norms, granite adds its multipliers, mixtral is this block with experts, which
`load_ffn` already handles, phi3 fuses Q/K/V and gate/up in the file): each overrides
only `load_block` or `block`.

In fast numerics the block runs as Llama's does (fastpath.py): Q/K/V (biases included)
and gate/up as one matmul each, Q/K norms of all heads in one call, RoPE and attention
planned once per forward pass and batched across slots. Layers with experts keep their
own FFN; a model whose block differs (granite's multipliers, LayerNorm, clamped QKV)
keeps the per-op code. Gemma 1/2 (GELU, post-norms, soft-capped attention) share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyllama import numerics
from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models import fastpath as fp
from pyllama.models.base import Batch, Weights
from pyllama.models.blocks import ArchModel, Attention, FeedForward, MixtureOfExperts, Norm, norm

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class PreNormBlock:
    attn_norm: Norm
    attn: Attention
    ffn_norm: Norm
    ffn: FeedForward | MixtureOfExperts
    q_norm: Norm | None = None
    k_norm: Norm | None = None


@dataclass
class FastPreNormBlock:
    """One block's weights fused for the fast path; gate_up/down None: the FFN has experts."""

    qkv: fp.FusedLinear
    out: fp.FusedLinear
    gate_up: fp.FusedLinear | None
    down: fp.FusedLinear | None
    qk_norm: F32 | None  # Q's and K's RMSNorm weights stacked per head (qwen3)
    geglu: bool = False  # GELU-gated FFN (gemma) instead of SwiGLU
    post_attn_norm: F32 | None = None  # Gemma 2's norms after each sub-layer (None: absent)
    post_ffn_norm: F32 | None = None
    has_post_norms: bool = False


def _plain_rms(n: Norm | None) -> bool:
    return n is not None and n.kind == "rms" and n.bias is None


class Qwen2Model(ArchModel):
    # Whether this architecture's block is the plain pre-norm one the fast path computes.
    fast_path = True

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.load_embeddings_and_head()
        self.output_norm = weights.vector("output_norm.weight")
        self.blocks = [self.load_block(i) for i in range(config.n_layer)]
        self.build_ropes(self.rope_factors())
        self.kq_scale = config.attention_scale or 1.0 / math.sqrt(config.head_dim)
        self.fast: list[FastPreNormBlock] | None = None
        self.plan: fp.AttentionPlan | None = None
        if not numerics.EXACT:
            self.build_fast()

    # Attention logit soft-capping (Gemma 2 sets it; 0: none).
    attn_softcap = 0.0

    def fast_capable(self) -> bool:
        """RMSNorms without bias, gated SiLU/GELU FFNs (or experts), unclamped Q/K/V, Q and
        K norms both or neither, post-norms (Gemma 2) both or neither."""
        if not self.fast_path:
            return False
        for b in self.blocks:
            if not (_plain_rms(b.attn_norm) and _plain_rms(b.ffn_norm)) or b.attn.clamp > 0.0:
                return False
            if (b.q_norm is None) != (b.k_norm is None) or (b.q_norm is not None and not _plain_rms(b.q_norm)):
                return False
            if b.k_norm is not None and not _plain_rms(b.k_norm):
                return False
            ffn = b.ffn
            if isinstance(ffn, FeedForward) and (ffn.act not in ("silu", "gelu") or (ffn.gate is None and not ffn.fused_gate)):
                return False
            post = [getattr(b, "post_attn_norm", None), getattr(b, "post_ffn_norm", None)]
            if any(n is not None for n in post) and not all(_plain_rms(n) for n in post):
                return False
        return True

    def build_fast(self) -> list[FastPreNormBlock] | None:
        """Fuse each block's projections once (dense weights are shared with the per-op code)."""
        if self.fast is None and self.fast_capable():
            cfg = self.config
            fast = []
            for b in self.blocks:
                a, ffn = b.attn, b.ffn
                if a.qkv is not None:
                    qkv = fp.FusedLinear([a.qkv.lin], [a.qkv.bias])
                else:
                    assert a.q is not None and a.k is not None and a.v is not None
                    qkv = fp.FusedLinear([a.q.lin, a.k.lin, a.v.lin], [a.q.bias, a.k.bias, a.v.bias])
                gate_up = down = None
                if isinstance(ffn, FeedForward):
                    parts = [ffn.up] if ffn.fused_gate or ffn.gate is None else [ffn.gate, ffn.up]
                    gate_up = fp.FusedLinear([d.lin for d in parts], [d.bias for d in parts])
                    down = fp.FusedLinear([ffn.down.lin], [ffn.down.bias])
                qk_norm = None
                if b.q_norm is not None and b.k_norm is not None:
                    ones = np.ones(cfg.head_dim, np.float32)
                    qw = ones if b.q_norm.weight is None else b.q_norm.weight
                    kw = ones if b.k_norm.weight is None else b.k_norm.weight
                    qk_norm = np.stack([qw] * cfg.n_head + [kw] * cfg.n_head_kv).astype(np.float32)
                pa, pf = getattr(b, "post_attn_norm", None), getattr(b, "post_ffn_norm", None)
                fast.append(FastPreNormBlock(
                    qkv, fp.FusedLinear([a.out.lin], [a.out.bias]), gate_up, down, qk_norm,
                    geglu=isinstance(ffn, FeedForward) and ffn.act == "gelu",
                    post_attn_norm=None if pa is None else pa.weight, post_ffn_norm=None if pf is None else pf.weight,
                    has_post_norms=pa is not None,
                ))
            self.fast_ropes = {id(r): fp.FastRope(r) for r in self.ropes}
            self.fast_output = fp.FusedLinear([self.output])
            self.fast = fast
        return self.fast

    def begin_forward(self, batch: Batch) -> None:
        fast = None if numerics.EXACT else self.build_fast()
        self.plan = None if fast is None else fp.AttentionPlan(self.kv, batch, self.causal)

    def fast_block(self, layer: int, x: F32, plan: fp.AttentionPlan) -> F32:
        """The block in fast numerics: Llama's fused form, residuals in place."""
        assert self.fast is not None
        b, f, cfg = self.blocks[layer], self.fast[layer], self.config
        t, h, hkv, eps = x.shape[0], cfg.n_head, cfg.n_head_kv, cfg.norm_eps
        nq, nk = h * cfg.head_dim, hkv * cfg.head_dim
        y = f.qkv(fp.rms_norm(x, b.attn_norm.weight, eps))
        qk = y[:, : nq + nk].reshape(t, h + hkv, cfg.head_dim)
        if f.qk_norm is not None:
            qk = fp.rms_norm(qk, f.qk_norm, eps)
        self.fast_ropes[id(self.ropes[layer])].apply(qk, plan.positions)
        v = y[:, nq + nk :].reshape(t, hkv, cfg.head_dim_v)
        attn = plan.attend(
            layer, qk[:, :h], qk[:, h:], v, self.kq_scale, window=self.window(layer), softcap=self.attn_softcap
        )
        out = f.out(attn)
        x += fp.rms_norm(out, f.post_attn_norm, eps) if f.has_post_norms else out
        m = fp.rms_norm(x, b.ffn_norm.weight, eps)
        if f.gate_up is not None and f.down is not None:
            act = fp.geglu if f.geglu else fp.swiglu
            ff = f.down(act(f.gate_up(m), f.gate_up.n_out // 2))
        else:
            ff = b.ffn(m)
        x += fp.rms_norm(ff, f.post_ffn_norm, eps) if f.has_post_norms else ff
        return x

    def load_block(self, i: int) -> PreNormBlock:
        w, cfg = self.w, self.config
        return PreNormBlock(
            attn_norm=norm(w, f"blk.{i}.attn_norm", "rms", cfg.norm_eps),
            attn=Attention.load(w, i, cfg),
            ffn_norm=norm(w, f"blk.{i}.ffn_norm", "rms", cfg.norm_eps),
            ffn=self.load_ffn(i),
        )

    def load_ffn(self, i: int) -> FeedForward | MixtureOfExperts:
        """SwiGLU, or the experts where the layer has a router (llama.cpp checks ffn_gate_inp)."""
        if self.w.has(f"blk.{i}.ffn_gate_inp.weight"):
            return MixtureOfExperts.load(self.w, i, self.config)
        return FeedForward.load(self.w, i, "silu")

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        if self.plan is not None:
            return self.fast_block(layer, x, self.plan)
        b = self.blocks[layer]
        h = x + self.self_attention(layer, b.attn_norm(x), batch, positions)
        return h + b.ffn(b.ffn_norm(h))

    def self_attention(self, layer: int, n: F32, batch: Batch, positions: I64) -> F32:
        """Project, (norm,) rotate, attend through the cache, project out."""
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(n)
        q = self.heads(q, cfg.n_head, cfg.head_dim)
        k = self.heads(k, cfg.n_head_kv, cfg.head_dim)
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        if b.q_norm is not None and b.k_norm is not None:
            q, k = b.q_norm(q), b.k_norm(k)
        rope = self.ropes[layer]
        rope.apply(q, positions)
        rope.apply(k, positions)
        return b.attn.out(self.attend(layer, q, k, v, batch, self.kq_scale, window=self.window(layer)))
