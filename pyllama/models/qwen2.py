"""Qwen 2 / 2.5: Llama with biases on the Q, K and V projections.

    [q|k|v] = Wqkv · rms_norm(x) + b

The biases come with the file and the fused projection adds them: no code differs.
"""

from __future__ import annotations

from pyllama.models.llama import LlamaModel


class Qwen2Model(LlamaModel):
    pass
