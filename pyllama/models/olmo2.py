"""OLMo 2: Llama without pre-norms; norms after each sub-layer and on the full-width Q and K.

    q = rms_norm(Wq·x) (whole width, before splitting heads), k likewise; then RoPE
    h   = x + post_attn_norm(Wo · attn(q, k, Wv·x))
    out = h + post_ffw_norm(Wdown · (silu(Wgate·h) * Wup·h))

All of it is in which tensors the file holds (no attn_norm/ffn_norm; attn_q_norm of the
whole width), which LlamaModel.load_layer reads. With attention.sliding_window set, three
of every four layers use the window and plain (unscaled) RoPE (config.py).
"""

from __future__ import annotations

from pyllama.models.llama import LlamaModel


class Olmo2Model(LlamaModel):
    pre_norms = False
