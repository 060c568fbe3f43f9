"""Qwen 3 (dense): Qwen 2 without the Q/K/V biases, plus an RMSNorm on every query and
key head before RoPE (`attn_q_norm`, `attn_k_norm`, one weight of head size)."""

from __future__ import annotations

from pyllama.models.blocks import norm
from pyllama.models.qwen2 import PreNormBlock, Qwen2Model


class Qwen3Model(Qwen2Model):
    def load_block(self, i: int) -> PreNormBlock:
        b = super().load_block(i)
        eps = self.config.norm_eps
        b.q_norm = norm(self.w, f"blk.{i}.attn_q_norm", "rms", eps)
        b.k_norm = norm(self.w, f"blk.{i}.attn_k_norm", "rms", eps)
        return b
