"""One block's weights as the shared block reads them, and the mixture-of-experts FFN.

`Layer` holds what llama.cpp's `src/models/<arch>.cpp` builds per layer, with the
projections fused at load by the model's kernel set: Q/K/V as one `qkv`, gate and up as
one `gate_up`. Optional parts (norms after each sub-layer, Q/K norms, experts) are None
when an architecture has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pyllama.config import ModelConfig
from pyllama.errors import ModelLoadError
from pyllama.gguf_file import TensorInfo
from pyllama.kernels import Kernels, Projection
from pyllama.linear import Linear
from pyllama.models.base import Weights
from pyllama.ops import as_f32, softmax

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
NormKind = Literal["rms", "layer"]
Activation = Literal["silu", "gelu"]


@dataclass
class Norm:
    """build_norm: RMSNorm or LayerNorm over the last axis, with optional weight and bias."""

    kind: NormKind
    eps: float
    weight: F32 | None
    bias: F32 | None = None


@dataclass
class Layer:
    attn_norm: Norm | None  # None: no norm before attention (OLMo 2, BERT)
    qkv: Projection  # [q | k | v] (+ biases)
    wo: Projection
    ffn_norm: Norm | None
    gate_up: Projection | None = None  # [gate | up] when n_ff > 0, else up alone
    down: Projection | None = None
    n_ff: int = 0  # width of the gate (0: the FFN is not gated: act(up))
    moe: MixtureOfExperts | None = None  # experts instead of gate_up/down
    qk_norm: F32 | None = None  # per-head RMSNorm weights of Q's and K's heads, stacked (H+Hkv, Dh)
    q_norm: F32 | None = None  # whole-width Q and K RMSNorm weights (OLMo 2)
    k_norm: F32 | None = None
    post_attn_norm: Norm | None = None  # norms after each sub-layer (Gemma 2/3, OLMo 2)
    post_ffn_norm: Norm | None = None
    q_scaled: bool = False  # the attention scale is folded into qkv's Q columns (kernels' fold)


def expert_linears(w: Weights, name: str) -> list[Linear]:
    """Split a 3-D expert tensor (n_expert, n_out, n_in) into one Linear per expert.

    Each expert's rows are contiguous in the file, so a slice of the raw bytes is a valid
    2-D tensor of the same ggml type: dense and packed modes then work per expert.
    """
    if name not in w.gguf.tensors:
        raise ModelLoadError(f"{w.gguf.path}: required tensor {name} is missing")
    info = w.gguf.tensors[name]
    if len(info.shape) != 3:
        raise ModelLoadError(f"{w.gguf.path}: expert tensor {name} must be 3-D, got shape {info.shape}")
    n_expert, n_out, n_in = info.shape
    per = info.n_bytes // n_expert
    out: list[Linear] = []
    for e in range(n_expert):
        part = TensorInfo(
            f"{name}[{e}]", info.ggml_type, (n_out, n_in), info.offset + e * per, per, info.data[e * per : (e + 1) * per]
        )
        lin = Linear(part, w.mode, layout=w.packing, backend=w.kernels.backend)
        w.nbytes += lin.nbytes
        out.append(lin)
    return out


@dataclass
class MixtureOfExperts:
    """build_moe_ffn with softmax gating: each token runs its top-k experts, mixed by the
    renormalised router probabilities (Mixtral, Granite MoE)."""

    router: Linear
    up: list[Linear]
    gate: list[Linear] | None
    down: list[Linear]
    n_used: int
    norm_weights: bool = True
    weights_scale: float = 0.0
    act: Activation = "silu"

    @classmethod
    def load(cls, w: Weights, layer: int, cfg: ModelConfig, act: Activation = "silu") -> MixtureOfExperts:
        p = f"blk.{layer}"
        gate = expert_linears(w, f"{p}.ffn_gate_exps.weight") if w.has(f"{p}.ffn_gate_exps.weight") else None
        if cfg.n_expert_used <= 0 or cfg.n_expert_used > cfg.n_expert:
            raise ModelLoadError(
                f"{w.gguf.path}: expert_used_count {cfg.n_expert_used} must be in 1..expert_count ({cfg.n_expert})"
            )
        return cls(
            w.linear(f"{p}.ffn_gate_inp.weight"),
            expert_linears(w, f"{p}.ffn_up_exps.weight"),
            gate,
            expert_linears(w, f"{p}.ffn_down_exps.weight"),
            cfg.n_expert_used,
            True,
            cfg.expert_weights_scale,
            act,
        )

    def route(self, x: F32) -> tuple[I64, F32]:
        """Top-k expert ids (T, k) and their mixing weights (T, k)."""
        probs = softmax(self.router(x))
        top = np.argsort(-probs, axis=-1, kind="stable")[:, : self.n_used]
        weights = np.take_along_axis(probs, top, axis=-1)
        if self.norm_weights:
            total = np.maximum(weights.sum(axis=-1, keepdims=True), np.float32(6.103515625e-5))
            weights = weights / total
        if self.weights_scale not in (0.0, 1.0):
            weights = weights * np.float32(self.weights_scale)
        return top.astype(np.int64), as_f32(weights.astype(np.float32))

    def __call__(self, x: F32, k: Kernels) -> F32:
        top, weights = self.route(x)
        out = np.zeros_like(x)
        act = k.silu if self.act == "silu" else k.gelu
        for e in np.unique(top):
            rows, slot = np.nonzero(top == e)
            xe = x[rows]
            up = self.up[e](xe)
            h = act(self.gate[e](xe)) * up if self.gate is not None else act(up)
            out[rows] += self.down[e](as_f32(h)) * weights[rows, slot][:, None]
        return out
