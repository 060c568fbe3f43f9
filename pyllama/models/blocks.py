"""Pieces the architecture files compose: biased projections, norms, attention, FFNs, MoE.

These mirror llama.cpp's graph helpers (src/llama-graph.cpp) one to one, so an
architecture file reads like its `src/models/<arch>.cpp`:
    build_norm -> Norm, build_qkv -> Attention.project, build_attn -> ArchModel.attend,
    build_ffn -> FeedForward, build_moe_ffn -> MixtureOfExperts.
`ArchModel` adds what every decoder here needs on top of DecoderModel: the token
embedding, the output head (tied, biased, soft-capped or scaled) and one RoPE table per
layer (sliding-window layers may use another base).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pyllama import numerics
from pyllama.config import ModelConfig
from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile, TensorInfo
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
from pyllama.models.base import Batch, DecoderModel, Weights
from pyllama.ops import RopeTable, as_f32, attention, layer_norm, rms_norm, silu, softmax

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
NormKind = Literal["rms", "layer"]
Activation = Literal["silu", "gelu"]



def gelu(x: F32) -> F32:
    """GELU (tanh form) exactly as ggml's CPU backend computes it: x rounded to f16 and
    looked up in ggml's f16 table (GGML_GELU_FP16); see pyllama.numerics.gelu."""
    return numerics.gelu(x)


def activate(kind: Activation, x: F32) -> F32:
    return silu(x) if kind == "silu" else gelu(x)


@dataclass
class Dense:
    """y = x W^T (+ b): a Linear with the optional bias llama.cpp adds right after it."""

    lin: Linear
    bias: F32 | None = None

    def __call__(self, x: F32) -> F32:
        y = self.lin(x)
        if self.bias is not None:
            y += self.bias
        return y

    @property
    def n_out(self) -> int:
        return self.lin.n_out


def dense(w: Weights, name: str) -> Dense:
    """`name`.weight with `name`.bias when the file has one."""
    return Dense(w.linear(f"{name}.weight"), w.optional_vector(f"{name}.bias"))


def optional_dense(w: Weights, name: str) -> Dense | None:
    return dense(w, name) if w.has(f"{name}.weight") else None


@dataclass
class Norm:
    """build_norm: RMSNorm or LayerNorm over the last axis, with optional weight and bias."""

    kind: NormKind
    eps: float
    weight: F32 | None
    bias: F32 | None = None

    def __call__(self, x: F32) -> F32:
        if self.kind == "rms":
            out = rms_norm(x, self.weight, self.eps)
            if self.bias is not None:
                out += self.bias
            return out
        return layer_norm(x, self.weight, self.bias, self.eps)


def norm(w: Weights, name: str, kind: NormKind, eps: float) -> Norm:
    return Norm(kind, eps, w.vector(f"{name}.weight"), w.optional_vector(f"{name}.bias"))


def optional_norm(w: Weights, name: str, kind: NormKind, eps: float) -> Norm | None:
    return norm(w, name, kind, eps) if w.has(f"{name}.weight") else None


@dataclass
class Attention:
    """Q/K/V/O projections of one layer (create_tensor_qkv + build_qkv).

    Either one fused `attn_qkv` (phi3, gpt2) or separate `attn_q/k/v`, each with optional
    bias; `clamp` is llama.cpp's attention.clamp_kqv.
    """

    q: Dense | None
    k: Dense | None
    v: Dense | None
    qkv: Dense | None
    out: Dense
    n_q: int
    n_k: int
    clamp: float = 0.0

    @classmethod
    def load(cls, w: Weights, layer: int, cfg: ModelConfig) -> Attention:
        p = f"blk.{layer}"
        n_q, n_k = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        out = dense(w, f"{p}.attn_output")
        if w.has(f"{p}.attn_qkv.weight"):
            qkv = dense(w, f"{p}.attn_qkv")
            if qkv.bias is None and all(w.has(f"{p}.attn_{x}.bias") for x in "qkv"):
                qkv.bias = np.concatenate([w.vector(f"{p}.attn_{x}.bias") for x in "qkv"])
            return cls(None, None, None, qkv, out, n_q, n_k, cfg.clamp_kqv)
        return cls(
            dense(w, f"{p}.attn_q"), dense(w, f"{p}.attn_k"), dense(w, f"{p}.attn_v"), None, out, n_q, n_k, cfg.clamp_kqv
        )

    def project(self, x: F32) -> tuple[F32, F32, F32]:
        """(T, D) -> flat q (T, H*Dh), k (T, Hkv*Dh), v (T, Hkv*Dv)."""
        if self.qkv is not None:
            y = self.qkv(x)
            if self.clamp > 0.0:
                np.clip(y, -self.clamp, self.clamp, out=y)
            return y[:, : self.n_q], y[:, self.n_q : self.n_q + self.n_k], y[:, self.n_q + self.n_k :]
        assert self.q is not None and self.k is not None and self.v is not None
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.clamp > 0.0:
            for a in (q, k, v):
                np.clip(a, -self.clamp, self.clamp, out=a)
        return q, k, v


@dataclass
class FeedForward:
    """build_ffn: down(act(gate(x)) * up(x)) when gated (PAR), else down(act(up(x))) (SEQ).

    `fused_gate` is phi3's layout: `up` emits [gate | up] and ggml_swiglu splits it.
    """

    up: Dense
    down: Dense
    gate: Dense | None = None
    act: Activation = "silu"
    fused_gate: bool = False

    @classmethod
    def load(cls, w: Weights, layer: int, act: Activation = "silu", fused_gate: bool = False) -> FeedForward:
        p = f"blk.{layer}"
        return cls(dense(w, f"{p}.ffn_up"), dense(w, f"{p}.ffn_down"), optional_dense(w, f"{p}.ffn_gate"), act, fused_gate)

    def __call__(self, x: F32) -> F32:
        up = self.up(x)
        if self.fused_gate:
            half = up.shape[-1] // 2
            h = activate(self.act, np.ascontiguousarray(up[:, :half])) * up[:, half:]
        elif self.gate is not None:
            h = activate(self.act, self.gate(x)) * up
        else:
            h = activate(self.act, up)
        return self.down(as_f32(h))


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
        lin = Linear(part, w.mode)
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

    def __call__(self, x: F32) -> F32:
        top, weights = self.route(x)
        out = np.zeros_like(x)
        for e in np.unique(top):
            rows, slot = np.nonzero(top == e)
            xe = x[rows]
            up = self.up[e](xe)
            h = activate(self.act, self.gate[e](xe)) * up if self.gate is not None else activate(self.act, up)
            out[rows] += self.down[e](as_f32(h)) * weights[rows, slot][:, None]
        return out


class ArchModel(DecoderModel):
    """DecoderModel plus the parts every architecture file here shares."""

    ropes: list[RopeTable]
    output_bias: F32 | None = None

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        super().__init__(gguf, config, weights, kv)
        self.output_bias = None
        self.output_norm = None

    # -- loading helpers ---------------------------------------------------------------
    def load_embeddings_and_head(self, tied_only: bool = False) -> None:
        """token_embd, and output (falls back to token_embd when the file ties them)."""
        w = self.w
        self.tok_embd = w.linear("token_embd.weight")
        if not tied_only and w.has("output.weight"):
            self.output = w.linear("output.weight")
        else:
            self.output = self.tok_embd
        self.output_bias = w.optional_vector("output.bias")

    def build_ropes(self, freq_factors: F32 | None = None) -> None:
        """One RoPE table per layer; sliding-window layers share a table with their own base."""
        cfg = self.config
        n_pos = self.kv.n_ctx_seq
        self.rope = RopeTable(cfg.rope, n_pos, freq_factors)
        swa: RopeTable | None = None
        if any(cfg.is_swa(i) for i in range(cfg.n_layer)):
            swa = RopeTable(cfg.rope_swa(), n_pos, freq_factors)
        self.ropes = [swa if swa is not None and cfg.is_swa(i) else self.rope for i in range(cfg.n_layer)]

    def rope_factors(self) -> F32 | None:
        """rope_freqs (llama 3), or LongRoPE's long/short factors chosen by context size
        (llama_model::get_rope_factors)."""
        w = self.w
        if w.has("rope_freqs.weight"):
            return w.vector("rope_freqs.weight")
        name = "rope_factors_long.weight" if self.kv.n_ctx_seq > self.config.rope.n_ctx_orig else "rope_factors_short.weight"
        return w.optional_vector(name)

    def rope_for_layer(self, layer: int) -> RopeTable:
        return self.ropes[layer]

    # -- forward helpers ---------------------------------------------------------------
    def heads(self, x: F32, n_head: int, dim: int) -> F32:
        return as_f32(np.ascontiguousarray(x).reshape(x.shape[0], n_head, dim))

    def attend(
        self,
        layer: int,
        q: F32,
        k: F32,
        v: F32,
        batch: Batch,
        scale: float,
        *,
        window: int = 0,
        softcap: float = 0.0,
    ) -> F32:
        """build_attn: store this batch's K/V in the cache, then attend per sequence.

        q: (T, H, Dh), k: (T, Hkv, Dh), v: (T, Hkv, Dv) -> (T, H*Dv), before the output projection.
        """
        cfg = self.config
        out = np.empty((q.shape[0], cfg.n_head * cfg.head_dim_v), dtype=np.float32)
        start = 0
        for c in batch.chunks:
            n = len(c.tokens)
            rows = slice(start, start + n)
            self.kv.write(layer, c.seq, c.pos, k[rows], v[rows])
            end = c.pos + n
            out[rows] = attention(
                q[rows],
                self.kv.keys(layer, c.seq, end),
                self.kv.values(layer, c.seq, end),
                np.arange(c.pos, end, dtype=np.int64),
                np.arange(0, end, dtype=np.int64),
                scale,
                causal=self.causal,
                window=window,
                softcap=softcap,
            )
            start += n
        return out

    def window(self, layer: int) -> int:
        return self.config.sliding_window if self.config.is_swa(layer) else 0

    def final_norm(self, x: F32) -> F32:
        return x if self.output_norm is None else rms_norm(x, self.output_norm, self.config.norm_eps)

    def head(self, h: F32) -> F32:
        """lm_head, then the output bias, llama.cpp's final soft-cap or Granite's logit scale."""
        logits = self.output_logits(h)
        if self.output_bias is not None:
            logits += self.output_bias
        return logits



def softcap(x: F32, cap: float) -> F32:
    """cap * tanh(x / cap): Gemma 2's final logit soft-capping."""
    return as_f32(np.tanh(x * np.float32(1.0 / cap)) * np.float32(cap))
