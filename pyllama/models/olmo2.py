"""OLMo 2: no pre-norms; norms after each sub-layer and on the full-width Q and K.

    q = rms_norm(Wq·x) (whole width, before splitting heads), k likewise; then RoPE
    h   = x + post_attn_norm(Wo · attn(q, k, Wv·x))
    out = h + post_ffw_norm(Wdown · (silu(Wgate·h) * Wup·h))

With attention.sliding_window set, three of every four layers use the window and plain
(unscaled) RoPE.
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
from pyllama.models.blocks import ArchModel, Attention, FeedForward, Norm, norm

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class Olmo2Block:
    attn: Attention
    q_norm: Norm
    k_norm: Norm
    post_attn_norm: Norm
    ffn: FeedForward
    post_ffn_norm: Norm


class Olmo2Model(ArchModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        w, eps = weights, config.norm_eps
        self.load_embeddings_and_head()
        self.output_norm = w.vector("output_norm.weight")
        self.blocks = [
            Olmo2Block(
                attn=Attention.load(w, i, config),
                q_norm=norm(w, f"blk.{i}.attn_q_norm", "rms", eps),
                k_norm=norm(w, f"blk.{i}.attn_k_norm", "rms", eps),
                post_attn_norm=norm(w, f"blk.{i}.post_attention_norm", "rms", eps),
                ffn=FeedForward.load(w, i, "silu"),
                post_ffn_norm=norm(w, f"blk.{i}.post_ffw_norm", "rms", eps),
            )
            for i in range(config.n_layer)
        ]
        self.build_ropes()
        self.kq_scale = 1.0 / math.sqrt(config.head_dim)

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(x)
        q = self.heads(b.q_norm(q), cfg.n_head, cfg.head_dim)
        k = self.heads(b.k_norm(k), cfg.n_head_kv, cfg.head_dim)
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        rope = self.ropes[layer]
        rope.apply(q, positions)
        rope.apply(k, positions)
        attn = b.attn.out(self.attend(layer, q, k, v, batch, self.kq_scale, window=self.window(layer)))
        h = x + b.post_attn_norm(attn)
        return h + b.post_ffn_norm(b.ffn(h))
