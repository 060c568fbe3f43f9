"""Gemma (1): the Llama block with three changes.

    x0     = sqrt(n_embd) · embed(tokens)
    ffn    = Wdown · (gelu(Wgate·m) * Wup·m)          (GeGLU instead of SwiGLU)
    logits = embed^T · rms_norm(out)                    (the head is always tied)

(GGUF conversion already folds Gemma's "1 + weight" RMSNorm into the stored weights.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.blocks import FeedForward, MixtureOfExperts
from pyllama.models.qwen2 import Qwen2Model

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class GemmaModel(Qwen2Model):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.kq_scale = 1.0 / math.sqrt(config.head_dim)

    def load_embeddings_and_head(self, tied_only: bool = False) -> None:
        super().load_embeddings_and_head(tied_only=True)  # llama.cpp ignores any output.weight for Gemma

    def embed(self, tokens: I64) -> F32:
        x: F32 = self.tok_embd.rows(tokens)
        x *= np.float32(math.sqrt(self.config.n_embd))
        return x

    def load_ffn(self, i: int) -> FeedForward | MixtureOfExperts:
        return FeedForward.load(self.w, i, "gelu")
