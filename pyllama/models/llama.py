"""Llama 1/2/3, Mistral, SmolLM, TinyLlama: pre-norm blocks of GQA attention and SwiGLU.

    h   = x + Wo · attn(rope(Wq·n), rope(Wk·n), Wv·n)   with n = rms_norm(x)
    out = h + Wdown · (silu(Wgate·m) * Wup·m)            with m = rms_norm(h)

Mixture-of-experts layers (Mixtral) route each token to its top-k experts.
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
from pyllama.linear import Linear
from pyllama.models import fastpath as fp
from pyllama.models.base import Batch, DecoderModel, Weights
from pyllama.ops import RopeTable, attention, rms_norm, silu

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class LlamaBlock:
    attn_norm: F32
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    ffn_norm: F32
    w_gate: Linear
    w_up: Linear
    w_down: Linear


@dataclass
class FastLlamaBlock:
    """One block's weights fused for the fast path (fastpath.py)."""

    qkv: fp.FusedLinear
    wo: fp.FusedLinear
    gate_up: fp.FusedLinear
    down: fp.FusedLinear


class LlamaModel(DecoderModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        w = weights
        self.tok_embd = w.linear("token_embd.weight")
        self.output_norm = w.vector("output_norm.weight")
        self.output = w.linear("output.weight") if w.has("output.weight") else self.tok_embd
        self.blocks = [
            LlamaBlock(
                attn_norm=w.vector(f"blk.{i}.attn_norm.weight"),
                wq=w.linear(f"blk.{i}.attn_q.weight"),
                wk=w.linear(f"blk.{i}.attn_k.weight"),
                wv=w.linear(f"blk.{i}.attn_v.weight"),
                wo=w.linear(f"blk.{i}.attn_output.weight"),
                ffn_norm=w.vector(f"blk.{i}.ffn_norm.weight"),
                w_gate=w.linear(f"blk.{i}.ffn_gate.weight"),
                w_up=w.linear(f"blk.{i}.ffn_up.weight"),
                w_down=w.linear(f"blk.{i}.ffn_down.weight"),
            )
            for i in range(config.n_layer)
        ]
        freq_factors = w.optional_vector("rope_freqs.weight")
        self.rope = RopeTable(config.rope, kv.n_ctx_seq, freq_factors)
        scale = config.attention_scale
        self.kq_scale = scale if scale else 1.0 / math.sqrt(config.head_dim)
        self.fast: list[FastLlamaBlock] | None = None
        self.plan: fp.AttentionPlan | None = None
        if not numerics.EXACT:
            self.build_fast()

    def build_fast(self) -> list[FastLlamaBlock]:
        """Fuse Q/K/V and gate/up (once; dense weights are shared with the exact path)."""
        if self.fast is None:
            self.fast = [
                FastLlamaBlock(
                    fp.FusedLinear([b.wq, b.wk, b.wv]),
                    fp.FusedLinear([b.wo]),
                    fp.FusedLinear([b.w_gate, b.w_up]),
                    fp.FusedLinear([b.w_down]),
                )
                for b in self.blocks
            ]
            self.fast_rope = fp.FastRope(self.rope)
            self.fast_output = fp.FusedLinear([self.output])
        return self.fast

    def begin_forward(self, batch: Batch) -> None:
        self.plan = None if numerics.EXACT else fp.AttentionPlan(self.kv, batch, self.causal)

    def fast_block(self, layer: int, x: F32, plan: fp.AttentionPlan) -> F32:
        """The block in fast numerics: 4 matmuls and ~30 NumPy calls, residuals in place."""
        b, f, cfg = self.blocks[layer], self.build_fast()[layer], self.config
        t, nq, nk = x.shape[0], cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        y = f.qkv(fp.rms_norm(x, b.attn_norm, cfg.norm_eps))
        qk = y[:, : nq + nk].reshape(t, cfg.n_head + cfg.n_head_kv, cfg.head_dim)
        self.fast_rope.apply(qk, plan.positions)
        v = y[:, nq + nk :].reshape(t, cfg.n_head_kv, cfg.head_dim_v)
        attn = plan.attend(layer, qk[:, : cfg.n_head], qk[:, cfg.n_head :], v, self.kq_scale)
        x += f.wo(attn)
        gu = f.gate_up(fp.rms_norm(x, b.ffn_norm, cfg.norm_eps))
        x += f.down(fp.swiglu(gu, b.w_gate.n_out))
        return x

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        if self.plan is not None:
            return self.fast_block(layer, x, self.plan)
        b = self.blocks[layer]
        cfg = self.config
        t = x.shape[0]
        n = rms_norm(x, b.attn_norm, cfg.norm_eps)
        q = b.wq(n).reshape(t, cfg.n_head, cfg.head_dim)
        k = b.wk(n).reshape(t, cfg.n_head_kv, cfg.head_dim)
        v = b.wv(n).reshape(t, cfg.n_head_kv, cfg.head_dim_v)
        self.rope.apply(q, positions)
        self.rope.apply(k, positions)
        attn = self.attend(layer, q, k, v, batch)
        h = x + b.wo(attn)
        m = rms_norm(h, b.ffn_norm, cfg.norm_eps)
        return h + b.w_down(silu(b.w_gate(m)) * b.w_up(m))

    def attend(self, layer: int, q: F32, k: F32, v: F32, batch: Batch, window: int = 0, softcap: float = 0.0) -> F32:
        """Write this batch's K/V into the cache and attend, one sequence at a time."""
        out = np.empty((q.shape[0], self.config.n_head * self.config.head_dim_v), dtype=np.float32)
        start = 0
        for c in batch.chunks:
            n = len(c.tokens)
            rows = slice(start, start + n)
            self.kv.write(layer, c.seq, c.pos, k[rows], v[rows])
            end = c.pos + n
            q_pos = np.arange(c.pos, end, dtype=np.int64)
            k_pos = np.arange(0, end, dtype=np.int64)
            out[rows] = attention(
                q[rows],
                self.kv.keys(layer, c.seq, end),
                self.kv.values(layer, c.seq, end),
                q_pos,
                k_pos,
                self.kq_scale,
                causal=self.causal,
                window=window,
                softcap=softcap,
            )
            start += n
        return out

    def final_norm(self, x: F32) -> F32:
        return rms_norm(x, self.output_norm, self.config.norm_eps)
