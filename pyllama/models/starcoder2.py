"""StarCoder 2: Llama with LayerNorms (with biases), biased projections everywhere and a
plain GELU MLP (no gate); RoPE in NeoX style, grouped-query attention.

    h   = x + Wo · attn(rope(q), rope(k), v) + bo    with [q|k|v] = Wqkv · layer_norm(x) + b
    out = h + Wdown · gelu(Wup · layer_norm(h) + bup) + bdown
"""

from __future__ import annotations

from pyllama.models.layers import Activation, NormKind
from pyllama.models.llama import LlamaModel


class StarCoder2Model(LlamaModel):
    norm_kind: NormKind = "layer"
    activation: Activation = "gelu"
