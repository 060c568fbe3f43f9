"""StarCoder 2: GPT-2's LayerNorm/biased/GELU block with RoPE (NeoX style) instead of
learned positions, separate biased Q/K/V projections, and grouped-query attention."""

from __future__ import annotations

from pyllama.models.gpt2 import GPT2Model


class StarCoder2Model(GPT2Model):
    uses_rope = True
