"""Phi-3 / Phi-3.5 / Phi-4-mini: the Llama block with fused projections and LongRoPE.

    q,k,v = split(Wqkv · rms_norm(x))                   (one fused attn_qkv)
    h     = x + Wo · attn(rope(q), rope(k), v)          (RoPE may cover only rope.dimension_count dims)
    g,u   = split(Wup · rms_norm(h))                    (ffn_up holds gate and up: 2·n_ff rows)
    out   = h + Wdown · (silu(g) * u)

LongRoPE: `rope_factors_long` / `rope_factors_short` divide the RoPE frequencies; the long
ones apply when the context exceeds rope.scaling.original_context_length, and
rope.scaling.attn_factor scales cos/sin. llama.cpp disables Phi's sliding window.
"""

from __future__ import annotations

from pyllama.models.blocks import Attention, FeedForward, MixtureOfExperts, optional_norm
from pyllama.models.qwen2 import PreNormBlock, Qwen2Model


class Phi3Model(Qwen2Model):
    def load_block(self, i: int) -> PreNormBlock:
        w, cfg = self.w, self.config
        attn_norm = optional_norm(w, f"blk.{i}.attn_norm", "rms", cfg.norm_eps)
        ffn_norm = optional_norm(w, f"blk.{i}.ffn_norm", "rms", cfg.norm_eps)
        assert attn_norm is not None and ffn_norm is not None
        return PreNormBlock(attn_norm, Attention.load(w, i, cfg), ffn_norm, self.load_ffn(i))

    def load_ffn(self, i: int) -> FeedForward | MixtureOfExperts:
        if self.w.has(f"blk.{i}.ffn_gate_inp.weight"):
            return MixtureOfExperts.load(self.w, i, self.config)
        return FeedForward.load(self.w, i, "silu", fused_gate=True)
