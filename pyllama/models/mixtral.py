"""Mixtral and other Llama-architecture mixtures of experts (`llama` with expert_count > 0).

The attention half is Llama's; the FFN half routes each token to its top-k experts:
    p = softmax(Wrouter · m);  top-k of p renormalised to sum 1;
    out = h + sum_k p_k · Wdown_k · (silu(Wgate_k·m) * Wup_k·m)
Expert weights are 3-D tensors `ffn_{gate,up,down}_exps` (n_expert, n_out, n_in); see
blocks.MixtureOfExperts. Layers without a router (`ffn_gate_inp`) stay dense SwiGLU.
"""

from __future__ import annotations

from pyllama.models.qwen2 import Qwen2Model


class MixtralModel(Qwen2Model):
    """Qwen2Model's block already is Llama's when the file has no Q/K/V biases, and its
    `load_ffn` builds the experts; Llama MoE needs nothing else."""
