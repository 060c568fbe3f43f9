"""BERT-style encoders for embeddings (`bert`, `nomic-bert`): Llama without the causal mask,
norms after the residual add instead of before the sub-layer, and no head.

    x0  = layer_norm(embed(tokens) + type_embed[0] + pos_embed(positions))   (nomic: no pos_embed)
    a   = layer_norm(x + Wo · attn(q, k, v) + bo)      every token sees every token
    out = layer_norm(a + ffn(a))                          bert: GELU MLP with biases
                                                          nomic: SwiGLU, RoPE on q and k
The output is the hidden state itself; pooling happens in pyllama.embeddings. llama.cpp
adds token type 0 to every position, and so does this file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.batch import Batch
from pyllama.config import ModelConfig
from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation, Layer, Norm, NormKind
from pyllama.models.llama import LlamaModel

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class BertModel(LlamaModel):
    norm_kind: NormKind = "layer"
    pre_norms = False
    causal = False
    has_head = False

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        # nomic-embed-text: RoPE instead of learned positions and a SwiGLU FFN.
        nomic = config.arch == "nomic-bert"
        self.uses_rope = nomic
        self.activation: Activation = "silu" if nomic else "gelu"
        super().__init__(gguf, config, weights, kv)
        types = weights.optional_vector("token_types.weight")
        self.type_row0 = None if types is None else types.reshape(-1, config.n_embd)[0].copy()
        self.pos_embd = weights.optional_linear("position_embd.weight")
        self.tok_norm = self.optional_norm("token_embd_norm")

    def load_layer(self, i: int) -> Layer:
        layer = super().load_layer(i)
        layer.post_attn_norm = self.optional_norm(f"blk.{i}.attn_output_norm")
        layer.post_ffn_norm = self.optional_norm(f"blk.{i}.layer_output_norm")
        return layer

    def hidden(self, batch: Batch) -> F32:
        """Each sequence must arrive whole (attention is bidirectional); it replaces what the
        cache held for that sequence, as llama.cpp keeps no memory for encoders."""
        for c in batch.chunks:
            if c.pos != 0:
                raise InvalidRequestError(
                    f"{self.config.arch} is an encoder: send each input whole in one batch (got a chunk at position {c.pos})"
                )
            self.kv.truncate(c.seq, 0)
        return super().hidden(batch)

    def embed(self, tokens: I64, positions: I64) -> F32:
        x = super().embed(tokens, positions)
        if self.type_row0 is not None:
            x += self.type_row0
        if self.pos_embd is not None:
            if len(positions) and int(positions.max()) >= self.pos_embd.n_out:
                raise InvalidRequestError(f"input longer than this model's {self.pos_embd.n_out} positions")
            x += self.pos_embd.rows(positions)
        return self.norm(self.tok_norm, x)

    def residual(self, x: F32, a: F32, post: Norm | None) -> F32:
        return self.norm(post, x + a)

    def head(self, h: F32) -> F32:
        raise InvalidRequestError(f"{self.config.arch} is an embedding model: it has no logits (use embeddings)")

