"""BERT-style encoders for embeddings (`bert`, `nomic-bert`): non-causal, post-norm.

    x0  = layer_norm(embed(tokens) + type_embed[0] + pos_embed(positions))   (nomic: no pos_embed)
    a   = layer_norm(x + Wo · attn(q, k, v) + bo)      every token sees every token
    out = layer_norm(a + ffn(a))                          bert: GELU MLP with biases
                                                          nomic: SwiGLU, RoPE on q and k
The output is the hidden state itself (no head); pooling happens in pyllama.embeddings.
llama.cpp adds token type 0 to every position, and so does this file.
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
from pyllama.models.blocks import Activation, ArchModel, Attention, FeedForward, Norm, norm

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class BertBlock:
    attn: Attention
    attn_out_norm: Norm
    ffn: FeedForward
    layer_out_norm: Norm


class BertModel(ArchModel):
    causal = False
    uses_rope = False
    ffn_activation: Activation = "gelu"

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        w, eps = weights, config.norm_eps
        self.tok_embd = w.linear("token_embd.weight")
        types = w.optional_vector("token_types.weight")
        self.type_row0 = None if types is None else types.reshape(-1, config.n_embd)[0].copy()
        self.pos_embd = w.linear("position_embd.weight") if w.has("position_embd.weight") else None
        self.tok_norm = norm(w, "token_embd_norm", "layer", eps)
        self.blocks = [
            BertBlock(
                attn=Attention.load(w, i, config),
                attn_out_norm=norm(w, f"blk.{i}.attn_output_norm", "layer", eps),
                ffn=FeedForward.load(w, i, self.ffn_activation),
                layer_out_norm=norm(w, f"blk.{i}.layer_output_norm", "layer", eps),
            )
            for i in range(config.n_layer)
        ]
        self.build_ropes()
        self.kq_scale = 1.0 / math.sqrt(config.head_dim)
        self._positions: I64 = np.zeros(0, dtype=np.int64)

    def hidden(self, batch: Batch) -> F32:
        """Each sequence must arrive whole (attention is bidirectional); it replaces what the
        cache held for that sequence, as llama.cpp keeps no memory for encoders."""
        for c in batch.chunks:
            if c.pos != 0:
                raise InvalidRequestError(
                    f"{self.config.arch} is an encoder: send each input whole in one batch (got a chunk at position {c.pos})"
                )
            self.kv.truncate(c.seq, 0)
        self._positions = np.fromiter((i for c in batch.chunks for i in range(len(c.tokens))), dtype=np.int64)
        return super().hidden(batch)

    def embed(self, tokens: I64) -> F32:
        x: F32 = self.tok_embd.rows(tokens)
        if self.type_row0 is not None:
            x += self.type_row0
        if self.pos_embd is not None:
            if len(self._positions) and int(self._positions.max()) >= self.pos_embd.n_out:
                raise InvalidRequestError(f"input longer than this model's {self.pos_embd.n_out} positions")
            x += self.pos_embd.rows(self._positions)
        return self.tok_norm(x)

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        b, cfg = self.blocks[layer], self.config
        q, k, v = b.attn.project(x)
        q = self.heads(q, cfg.n_head, cfg.head_dim)
        k = self.heads(k, cfg.n_head_kv, cfg.head_dim)
        v = self.heads(v, cfg.n_head_kv, cfg.head_dim_v)
        if self.uses_rope:
            rope = self.ropes[layer]
            rope.apply(q, positions)
            rope.apply(k, positions)
        a = b.attn_out_norm(x + b.attn.out(self.attend(layer, q, k, v, batch, self.kq_scale)))
        return b.layer_out_norm(a + b.ffn(a))

    def final_norm(self, x: F32) -> F32:
        return x

    def head(self, h: F32) -> F32:
        raise InvalidRequestError(f"{self.config.arch} is an embedding model: it has no logits (use embeddings)")


class NomicBertModel(BertModel):
    """nomic-embed-text: BERT with RoPE instead of learned positions and a SwiGLU FFN."""

    uses_rope = True
    ffn_activation: Activation = "silu"
