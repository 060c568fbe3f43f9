"""Qwen 2 / 2.5: Llama's pre-norm block with biases on the Q, K and V projections.

    h   = x + Wo · attn(rope(q), rope(k), v)     with q, k, v = Wqkv·rms_norm(x) + b
    out = h + Wdown · (silu(Wgate·m) * Wup·m)     with m = rms_norm(h)

This file is also the base of the other Llama-shaped architectures here (qwen3 adds
Q/K norms, granite adds its multipliers, mixtral is this block with experts, which
`load_ffn` already handles): each overrides only `load_block` or `block`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
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


class Qwen2Model(ArchModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.load_embeddings_and_head()
        self.output_norm = weights.vector("output_norm.weight")
        self.blocks = [self.load_block(i) for i in range(config.n_layer)]
        self.build_ropes(self.rope_factors())
        self.kq_scale = config.attention_scale or 1.0 / math.sqrt(config.head_dim)

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
