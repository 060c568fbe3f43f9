"""Qwen 3 (dense and MoE): Llama plus an RMSNorm on every query and key head before RoPE
(`attn_q_norm`, `attn_k_norm`: one weight of head size each, read by LlamaModel.load_layer)."""

from __future__ import annotations

from pyllama.models.llama import LlamaModel


class Qwen3Model(LlamaModel):
    pass
