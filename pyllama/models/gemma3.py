"""Gemma 3 (text): Gemma 2's sandwich-normed block with per-head Q/K RMSNorm instead of
attention soft-capping, and two RoPE bases.

    x0  = sqrt(n_embd) · embed(tokens)
    q,k = rope_l(rms_norm_head(Wq·n)), rope_l(rms_norm_head(Wk·n))   with n = rms_norm(x)
    h   = x + post_attn_norm(Wo · attn(q / sqrt(head_dim), k, v))    (window on SWA layers)
    out = h + post_ffw_norm(Wdown · (gelu(Wgate·m) * Wup·m))           with m = rms_norm(h)

Five of every six layers use a sliding window (attention.sliding_window, pattern from
attention.sliding_window_pattern) with RoPE base rope.freq_base_swa (10000) and no RoPE
scaling; the global layers use rope.freq_base and the model's scaling. The head is tied;
final_logit_softcapping applies only when the GGUF sets it.

Written self-contained (it only composes pyllama.models.blocks) so its numerics can be
tuned against llama.cpp's golden outputs without touching the other Gemma files.
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
from pyllama.models.blocks import ArchModel, Attention, FeedForward, Norm, norm, softcap

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class Gemma3Block:
    attn_norm: Norm
    attn: Attention
    q_norm: Norm
    k_norm: Norm
    post_attn_norm: Norm
    ffn_norm: Norm
    ffn: FeedForward
    post_ffn_norm: Norm


class Gemma3Model(ArchModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        w, eps = weights, config.norm_eps
        self.load_embeddings_and_head(tied_only=False)
        self.output_norm = w.vector("output_norm.weight")
        self.blocks = [
            Gemma3Block(
                attn_norm=norm(w, f"blk.{i}.attn_norm", "rms", eps),
                attn=Attention.load(w, i, config),
                q_norm=norm(w, f"blk.{i}.attn_q_norm", "rms", eps),
                k_norm=norm(w, f"blk.{i}.attn_k_norm", "rms", eps),
                post_attn_norm=norm(w, f"blk.{i}.post_attention_norm", "rms", eps),
                ffn_norm=norm(w, f"blk.{i}.ffn_norm", "rms", eps),
                ffn=FeedForward.load(w, i, "gelu"),
                post_ffn_norm=norm(w, f"blk.{i}.post_ffw_norm", "rms", eps),
            )
            for i in range(config.n_layer)
        ]
        self.build_ropes()
        big = config.n_layer == 62  # Gemma 3 27B scales queries by the model width per head
        self.q_scale = np.float32(1.0 / math.sqrt(config.n_embd / config.n_head if big else config.head_dim))
        self.fast: list[fp.FusedLinear] | None = None
        self.plan: fp.AttentionPlan | None = None
        if not numerics.EXACT:
            self.build_fast()

    def build_fast(self) -> list[fp.FusedLinear]:
        """Per layer [qkv, out, gate_up, down] fused (fastpath.py), the Q/K norm weights of
        all heads stacked (Q's already times the query scale), and fast RoPE tables."""
        if self.fast is None:
            fused: list[fp.FusedLinear] = []
            self.qk_norm_w: list[F32] = []
            for b in self.blocks:
                a, ffn = b.attn, b.ffn
                assert a.q is not None and a.k is not None and a.v is not None and ffn.gate is not None
                fused += [
                    fp.FusedLinear([a.q.lin, a.k.lin, a.v.lin], [a.q.bias, a.k.bias, a.v.bias]),
                    fp.FusedLinear([a.out.lin], [a.out.bias]),
                    fp.FusedLinear([ffn.gate.lin, ffn.up.lin], [ffn.gate.bias, ffn.up.bias]),
                    fp.FusedLinear([ffn.down.lin], [ffn.down.bias]),
                ]
                cfg = self.config
                qw = b.q_norm.weight if b.q_norm.weight is not None else np.ones(cfg.head_dim, np.float32)
                kw = b.k_norm.weight if b.k_norm.weight is not None else np.ones(cfg.head_dim, np.float32)
                rows = [qw * self.q_scale] * cfg.n_head + [kw] * cfg.n_head_kv
                self.qk_norm_w.append(np.stack(rows).astype(np.float32))
            self.fast_ropes = {id(r): fp.FastRope(r) for r in self.ropes}
            self.fast_output = fp.FusedLinear([self.output])
            self.fast = fused
        return self.fast

    def begin_forward(self, batch: Batch) -> None:
        self.plan = None if numerics.EXACT else fp.AttentionPlan(self.kv, batch, self.causal)

    def fast_block(self, layer: int, x: F32, plan: fp.AttentionPlan) -> F32:
        """The block in fast numerics: 4 fused matmuls, Q/K normed and rotated together."""
        b, cfg = self.blocks[layer], self.config
        qkv, wo, gate_up, down = self.build_fast()[4 * layer : 4 * layer + 4]
        t, h, hkv, eps = x.shape[0], cfg.n_head, cfg.n_head_kv, cfg.norm_eps
        nq, nk = h * cfg.head_dim, hkv * cfg.head_dim
        y = qkv(fp.rms_norm(x, b.attn_norm.weight, eps))
        qk = fp.rms_norm(y[:, : nq + nk].reshape(t, h + hkv, cfg.head_dim), self.qk_norm_w[layer], eps)
        self.fast_ropes[id(self.ropes[layer])].apply(qk, plan.positions)
        v = y[:, nq + nk :].reshape(t, hkv, cfg.head_dim_v)
        attn = plan.attend(layer, qk[:, :h], qk[:, h:], v, 1.0, window=self.window(layer))
        x += fp.rms_norm(wo(attn), b.post_attn_norm.weight, eps)
        gu = gate_up(fp.rms_norm(x, b.ffn_norm.weight, eps))
        x += fp.rms_norm(down(fp.geglu(gu, b.ffn.up.n_out)), b.post_ffn_norm.weight, eps)
        return x

    def embed(self, tokens: I64) -> F32:
        x: F32 = self.tok_embd.rows(tokens)
        x *= np.float32(math.sqrt(self.config.n_embd))
        return x

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        if self.plan is not None:
            return self.fast_block(layer, x, self.plan)
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(b.attn_norm(x))
        q = b.q_norm(self.heads(q, cfg.n_head, cfg.head_dim))
        k = b.k_norm(self.heads(k, cfg.n_head_kv, cfg.head_dim))
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        rope = self.ropes[layer]
        rope.apply(q, positions)
        rope.apply(k, positions)
        q *= self.q_scale
        attn = b.attn.out(self.attend(layer, q, k, v, batch, 1.0, window=self.window(layer)))
        h = x + b.post_attn_norm(attn)
        return h + b.post_ffn_norm(b.ffn(b.ffn_norm(h)))

    def head(self, h: F32) -> F32:
        logits = super().head(h)
        return softcap(logits, self.config.final_softcap) if self.config.final_softcap else logits
