"""IBM Granite 3.x: the Llama block with four multipliers from the GGUF.

    x0     = embedding_scale · embed(tokens)
    h      = x + residual_scale · attn(rms_norm(x))          (attention scale: attention.scale)
    out    = h + residual_scale · ffn(rms_norm(h))            (SwiGLU, or experts for Granite MoE)
    logits = lm_head(rms_norm(out)) / logit_scale
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama.models.base import Batch
from pyllama.models.qwen2 import Qwen2Model
from pyllama.ops import as_f32

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class GraniteModel(Qwen2Model):
    fast_path = False  # its multipliers sit between the fused pieces: the per-op block code

    def embed(self, tokens: I64) -> F32:
        x: F32 = self.tok_embd.rows(tokens)
        if self.config.embedding_scale:
            x *= np.float32(self.config.embedding_scale)
        return x

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        b = self.blocks[layer]
        r = np.float32(self.config.residual_scale or 1.0)
        h = x + self.self_attention(layer, b.attn_norm(x), batch, positions) * r
        return as_f32(h + b.ffn(b.ffn_norm(h)) * r)

    def head(self, h: F32) -> F32:
        logits: F32 = super().head(h)
        if self.config.logit_scale:
            logits /= np.float32(self.config.logit_scale)
        return logits
