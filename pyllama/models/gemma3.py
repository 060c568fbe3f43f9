"""Gemma 3 (text): Gemma 2's sandwich-normed block with per-head Q/K RMSNorm instead of
attention soft-capping, and two RoPE bases.

    x0  = sqrt(n_embd) · embed(tokens)
    q,k = rope_l(rms_norm_head(Wq·n)), rope_l(rms_norm_head(Wk·n))   with n = rms_norm(x)
    h   = x + post_attn_norm(Wo · attn(q / sqrt(head_dim), k, v))    (window on SWA layers)
    out = h + post_ffw_norm(Wdown · (gelu(Wgate·m) * Wup·m))           with m = rms_norm(h)

Five of every six layers use a sliding window (attention.sliding_window, pattern from
attention.sliding_window_pattern) with RoPE base rope.freq_base_swa (10000) and no RoPE
scaling; the global layers use rope.freq_base and the model's scaling. Queries are scaled
before attention (ggml_scale on Q), not the scores. final_logit_softcapping applies only
when the GGUF sets it.
"""

from __future__ import annotations

import math

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation
from pyllama.models.llama import LlamaModel


class Gemma3Model(LlamaModel):
    activation: Activation = "gelu"
    scale_queries = True

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.embed_scale = math.sqrt(config.n_embd)
        self.final_softcap = config.final_softcap

    def query_scale(self, config: ModelConfig) -> float:
        big = config.n_layer == 62  # Gemma 3 27B scales queries by the model width per head
        return 1.0 / math.sqrt(config.n_embd / config.n_head if big else config.head_dim)
