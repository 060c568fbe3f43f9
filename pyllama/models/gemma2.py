"""Gemma 2: Gemma (tied head, GeGLU, embeddings times sqrt(n_embd)) plus a norm after each
sub-layer, soft-capping and sliding windows.

    h      = x + post_attn_norm(attn(rms_norm(x)))    scores = 50·tanh(scores/50) (attn_logit_softcapping)
    out    = h + post_ffw_norm(geglu(rms_norm(h)))
    logits = 30·tanh(lm_head(rms_norm(out)) / 30)      (final_logit_softcapping)

Even layers attend within a sliding window (4096 unless the GGUF says otherwise), odd
layers globally; queries are scaled by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for 27B).
The post-norms are read by LlamaModel.load_layer.
"""

from __future__ import annotations

import math

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation
from pyllama.models.llama import LlamaModel


class Gemma2Model(LlamaModel):
    activation: Activation = "gelu"
    tied_head = True

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.embed_scale = math.sqrt(config.n_embd)
        # llama.cpp's defaults when the GGUF omits the keys.
        self.attn_softcap = config.attn_softcap or 50.0
        self.final_softcap = config.final_softcap or 30.0

    def query_scale(self, config: ModelConfig) -> float:
        big = config.n_layer == 46  # Gemma 2 27B scales by the model width per head
        return 1.0 / math.sqrt(config.n_embd / config.n_head if big else config.head_dim)
