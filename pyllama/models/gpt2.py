"""GPT-2: learned absolute positions, LayerNorm with biases, fused biased QKV, GELU MLP.

    x0     = embed(tokens) + pos_embed(positions)
    h      = x + Wo · attn(q, k, v) + bo       with q,k,v = split(Wqkv · layer_norm(x) + b)
    out    = h + Wdown · gelu(Wup · layer_norm(h) + bup) + bdown
    logits = lm_head(layer_norm(out))

No RoPE: positions enter only through the embedding table (context <= context_length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyllama.config import ModelConfig
from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Batch, Weights
from pyllama.models.blocks import ArchModel, Attention, FeedForward, Norm, norm

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class LayerNormBlock:
    attn_norm: Norm
    attn: Attention
    ffn_norm: Norm
    ffn: FeedForward


class GPT2Model(ArchModel):
    uses_rope = False

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        w, eps = weights, config.norm_eps
        self.load_embeddings_and_head()
        self.out_norm = norm(w, "output_norm", "layer", eps)
        self.pos_embd = w.linear("position_embd.weight") if w.has("position_embd.weight") else None
        self.blocks = [
            LayerNormBlock(
                attn_norm=norm(w, f"blk.{i}.attn_norm", "layer", eps),
                attn=Attention.load(w, i, config),
                ffn_norm=norm(w, f"blk.{i}.ffn_norm", "layer", eps),
                ffn=FeedForward.load(w, i, "gelu"),
            )
            for i in range(config.n_layer)
        ]
        self.build_ropes()
        self.kq_scale = 1.0 / math.sqrt(config.head_dim)
        self._positions: I64 = np.zeros(0, dtype=np.int64)  # of the batch being embedded

    def embed_positions(self, x: F32, positions: I64) -> F32:
        if self.pos_embd is None:
            return x
        if len(positions) and int(positions.max()) >= self.pos_embd.n_out:
            raise InvalidRequestError(
                f"position {int(positions.max())} is beyond this model's {self.pos_embd.n_out} learned positions"
            )
        x += self.pos_embd.rows(positions)
        return x

    def hidden(self, batch: Batch) -> F32:
        """DecoderModel.embed sees only token ids; learned positions need the batch's positions."""
        self._positions = np.fromiter((c.pos + i for c in batch.chunks for i in range(len(c.tokens))), dtype=np.int64)
        return super().hidden(batch)

    def embed(self, tokens: I64) -> F32:
        return self.embed_positions(self.tok_embd.rows(tokens), self._positions)

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(b.attn_norm(x))
        q = self.heads(q, cfg.n_head, cfg.head_dim)
        k = self.heads(k, cfg.n_head_kv, cfg.head_dim)
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        if self.uses_rope:
            rope = self.ropes[layer]
            rope.apply(q, positions)
            rope.apply(k, positions)
        h = x + b.attn.out(self.attend(layer, q, k, v, batch, self.kq_scale))
        return h + b.ffn(b.ffn_norm(h))

    def final_norm(self, x: F32) -> F32:
        return self.out_norm(x)

    def rerotate_keys(self, layer: int, keys: F32, delta: int) -> F32:
        """Context shift: without RoPE the cached keys carry no position to fix (llama.cpp skips
        the K-shift for rope type none)."""
        return keys if not self.uses_rope else super().rerotate_keys(layer, keys, delta)
