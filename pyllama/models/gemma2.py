"""Gemma 2: Gemma with a norm after each sub-layer, soft-capping, and sliding windows.

    h      = x + post_attn_norm(attn(rms_norm(x)))    scores = 50·tanh(scores/50) (attn_logit_softcapping)
    out    = h + post_ffw_norm(geglu(rms_norm(h)))
    logits = 30·tanh(lm_head(rms_norm(out)) / 30)      (final_logit_softcapping)

Even layers attend within a sliding window (4096 unless the GGUF says otherwise), odd
layers globally; queries are scaled by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for 27B).
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
from pyllama.models.blocks import Norm, norm, softcap
from pyllama.models.gemma import GemmaModel
from pyllama.models.qwen2 import PreNormBlock

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class SandwichBlock(PreNormBlock):
    post_attn_norm: Norm | None = None
    post_ffn_norm: Norm | None = None


class Gemma2Model(GemmaModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        # llama.cpp's defaults when the GGUF omits the keys (read at forward time, also by
        # Qwen2Model.fast_block).
        self.attn_softcap = config.attn_softcap or 50.0
        self.final_softcap = config.final_softcap or 30.0
        big = config.n_layer == 46  # Gemma 2 27B scales by the model width per head
        self.kq_scale = 1.0 / math.sqrt(config.n_embd / config.n_head if big else config.head_dim)

    def load_block(self, i: int) -> SandwichBlock:
        b = super().load_block(i)
        eps = self.config.norm_eps
        return SandwichBlock(
            b.attn_norm, b.attn, b.ffn_norm, b.ffn, b.q_norm, b.k_norm,
            norm(self.w, f"blk.{i}.post_attention_norm", "rms", eps),
            norm(self.w, f"blk.{i}.post_ffw_norm", "rms", eps),
        )

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        if self.plan is not None:
            return self.fast_block(layer, x, self.plan)
        b = self.blocks[layer]
        assert isinstance(b, SandwichBlock) and b.post_attn_norm is not None and b.post_ffn_norm is not None
        h = x + b.post_attn_norm(self.self_attention(layer, b.attn_norm(x), batch, positions))
        return h + b.post_ffn_norm(b.ffn(b.ffn_norm(h)))

    def self_attention(self, layer: int, n: F32, batch: Batch, positions: I64) -> F32:
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(n)
        q = self.heads(q, cfg.n_head, cfg.head_dim)
        k = self.heads(k, cfg.n_head_kv, cfg.head_dim)
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        rope = self.ropes[layer]
        rope.apply(q, positions)
        rope.apply(k, positions)
        out = self.attend(layer, q, k, v, batch, self.kq_scale, window=self.window(layer), softcap=self.attn_softcap)
        return b.attn.out(out)

    def head(self, h: F32) -> F32:
        return softcap(super().head(h), self.final_softcap)
