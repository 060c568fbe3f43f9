"""GPT-2: StarCoder 2's block (LayerNorm, biases, GELU MLP) with learned absolute positions
instead of RoPE.

    x0     = embed(tokens) + pos_embed(positions)
    h      = x + Wo · attn(q, k, v) + bo       with [q|k|v] = Wqkv · layer_norm(x) + b
    out    = h + Wdown · gelu(Wup · layer_norm(h) + bup) + bdown
    logits = lm_head(layer_norm(out))

Positions enter only through the embedding table (context <= context_length).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.config import ModelConfig
from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation, NormKind
from pyllama.models.llama import LlamaModel

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class GPT2Model(LlamaModel):
    norm_kind: NormKind = "layer"
    activation: Activation = "gelu"
    uses_rope = False

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.pos_embd = weights.optional_linear("position_embd.weight")

    def embed(self, tokens: I64, positions: I64) -> F32:
        x = super().embed(tokens, positions)
        if self.pos_embd is not None:
            if len(positions) and int(positions.max()) >= self.pos_embd.n_out:
                raise InvalidRequestError(
                    f"position {int(positions.max())} is beyond this model's {self.pos_embd.n_out} learned positions"
                )
            x += self.pos_embd.rows(positions)
        return x
