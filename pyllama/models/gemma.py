"""Gemma (1): Llama with three changes.

    x0     = sqrt(n_embd) · embed(tokens)
    ffn    = Wdown · (gelu(Wgate·m) * Wup·m)          (GeGLU instead of SwiGLU)
    logits = embed^T · rms_norm(out)                    (the head is always tied)

(GGUF conversion already folds Gemma's "1 + weight" RMSNorm into the stored weights.)
"""

from __future__ import annotations

import math

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation
from pyllama.models.llama import LlamaModel


class GemmaModel(LlamaModel):
    activation: Activation = "gelu"
    tied_head = True  # llama.cpp ignores any output.weight for Gemma

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.embed_scale = math.sqrt(config.n_embd)

    def query_scale(self, config: ModelConfig) -> float:
        return 1.0 / math.sqrt(config.head_dim)
