"""Phi-3 / Phi-3.5 / Phi-4-mini: Llama with the projections fused in the file, and LongRoPE.

    [q|k|v] = Wqkv · rms_norm(x)          (one attn_qkv tensor)
    [g|u]   = Wup · rms_norm(h)            (ffn_up holds gate and up: 2·n_ff rows)

LongRoPE: `rope_factors_long` / `rope_factors_short` divide the RoPE frequencies; the long
ones apply when the context exceeds rope.scaling.original_context_length, and
rope.scaling.attn_factor scales cos/sin (LlamaModel.rope_tables). llama.cpp disables
Phi's sliding window (config.py).
"""

from __future__ import annotations

from pyllama.models.llama import LlamaModel


class Phi3Model(LlamaModel):
    fused_gate_up = True
