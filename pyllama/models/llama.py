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

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
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

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
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
