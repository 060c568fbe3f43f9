"""IBM Granite 3.x: Llama with four multipliers from the GGUF.

    x0     = embedding_scale · embed(tokens)
    h      = x + residual_scale · attn(rms_norm(x))          (attention scale: attention.scale)
    out    = h + residual_scale · ffn(rms_norm(h))            (SwiGLU, or experts for Granite MoE)
    logits = lm_head(rms_norm(out)) / logit_scale
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.llama import LlamaModel

F32 = np.ndarray[Any, np.dtype[np.float32]]


class GraniteModel(LlamaModel):
    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.embed_scale = config.embedding_scale
        self.residual_scale = config.residual_scale or 1.0

    def head(self, h: F32) -> F32:
        logits = super().head(h)
        if self.config.logit_scale:
            logits /= np.float32(self.config.logit_scale)
        return logits
