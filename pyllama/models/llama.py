"""Llama 1/2/3, Mistral, SmolLM, Mixtral: the transformer every architecture file extends.

    h   = x + Wo · attn(rope(q), rope(k), v)      with [q|k|v] = Wqkv · rms_norm(x)
    out = h + Wdown · (silu(g) * u)               with [g|u]   = Wgate_up · rms_norm(h)

Layers with a router (`ffn_gate_inp`, Mixtral) replace the FFN by their top-k experts.

The other architectures are "Llama plus these differences": class attributes (norm kind,
activation, soft-caps, scales) and a few overridden methods (embed, residual, head).
What a GGUF holds or lacks needs no code: Q/K/V biases (Qwen 2), a fused attn_qkv
(Phi-3), per-head or whole-width Q/K norms (Qwen 3, Gemma 3, OLMo 2), norms after each
sub-layer (Gemma 2/3, OLMo 2), no norm before them (OLMo 2).

The block is written once. Every op goes through the kernel set the model holds
(`self.k`, pyllama/kernels): `fast` plain float32, `exact` ggml's arithmetic replayed;
the projections are fused by it at load.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyllama.batch import Batch
from pyllama.config import ModelConfig
from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import GGUFFile
from pyllama.kernels import AttentionPass, Projection, Rope
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.layers import Activation, Layer, MixtureOfExperts, Norm, NormKind
from pyllama.ops import RopeTable, layer_norm

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
f32 = np.float32


class LlamaModel:
    # -- what other architectures change -------------------------------------------------
    norm_kind: NormKind = "rms"  # "layer": LayerNorm with biases (GPT-2, StarCoder 2, BERT)
    activation: Activation = "silu"  # of the FFN: gated when the file has ffn_gate, or fused_gate_up
    pre_norms: bool = True  # attn_norm and ffn_norm are required (OLMo 2 and BERT norm after each sub-layer)
    fused_gate_up = False  # ffn_up holds [gate | up] (Phi-3)
    uses_rope = True
    causal = True
    tied_head = False  # always token_embd as the head, whatever output.weight the file has (Gemma)
    has_head = True  # False: an encoder (its output is the hidden state)
    scale_queries = False  # Q times kq_scale before attention instead of the scores (Gemma 3)

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        self.gguf, self.config, self.w, self.kv = gguf, config, weights, kv
        self.k = weights.kernels
        self.kq_scale = self.query_scale(config)  # before the layers: fast numerics fold it into Q
        self.attn_softcap = 0.0  # tanh soft-cap of attention scores (Gemma 2)
        self.final_softcap = 0.0  # and of the logits
        self.embed_scale = 0.0  # token embeddings times this (0: not scaled)
        self.residual_scale = 1.0  # sub-layer outputs times this before the residual add
        # what each block's output gets added (--control-vector, pyllama/control_vector.py): None = nothing
        self.control_vector: list[F32 | None] | None = None
        w = weights
        self.tok_embd = w.linear("token_embd.weight")
        self.output = w.linear("output.weight") if w.has("output.weight") and not self.tied_head else self.tok_embd
        self.layers = [self.load_layer(i) for i in range(config.n_layer)]
        self.output_norm = self.optional_norm("output_norm")
        self.ropes = self.rope_tables()
        rope_ops: dict[int, Rope] = {}
        self.rope_ops = [rope_ops.setdefault(id(t), self.k.rope(t)) for t in self.ropes]
        if self.has_head:
            self.head_proj = self.k.project([self.output], [w.optional_vector("output.bias")])

    # -- loading ---------------------------------------------------------------------------
    def query_scale(self, config: ModelConfig) -> float:
        """The scale of the attention scores (kq_scale of llama.cpp's build_attn)."""
        return config.attention_scale or 1.0 / math.sqrt(config.head_dim)

    def project(self, *names: str) -> Projection:
        """`name`.weight of each name fused into one projection, with `name`.bias where present."""
        w = self.w
        return self.k.project([w.linear(f"{n}.weight") for n in names], [w.optional_vector(f"{n}.bias") for n in names])

    def optional_norm(self, name: str) -> Norm | None:
        w = self.w.optional_vector(f"{name}.weight")
        return None if w is None else Norm(self.norm_kind, self.config.norm_eps, w, self.w.optional_vector(f"{name}.bias"))

    def required_norm(self, name: str) -> Norm:
        return Norm(self.norm_kind, self.config.norm_eps, self.w.vector(f"{name}.weight"),
                    self.w.optional_vector(f"{name}.bias"))

    def load_layer(self, i: int) -> Layer:
        w, cfg, p = self.w, self.config, f"blk.{i}"
        if w.has(f"{p}.attn_qkv.weight"):
            qkv_bias = w.optional_vector(f"{p}.attn_qkv.bias")
            if qkv_bias is None and all(w.has(f"{p}.attn_{x}.bias") for x in "qkv"):
                qkv_bias = np.concatenate([w.vector(f"{p}.attn_{x}.bias") for x in "qkv"])
            qkv = self.k.project([w.linear(f"{p}.attn_qkv.weight")], [qkv_bias])
        else:
            qkv = self.project(f"{p}.attn_q", f"{p}.attn_k", f"{p}.attn_v")
        pre_norm = self.required_norm if self.pre_norms else self.optional_norm
        layer = Layer(pre_norm(f"{p}.attn_norm"), qkv, self.project(f"{p}.attn_output"),
                      pre_norm(f"{p}.ffn_norm"), post_attn_norm=self.optional_norm(f"{p}.post_attention_norm"),
                      post_ffn_norm=self.optional_norm(f"{p}.post_ffw_norm"))
        q_norm, k_norm = w.optional_vector(f"{p}.attn_q_norm.weight"), w.optional_vector(f"{p}.attn_k_norm.weight")
        if q_norm is not None and k_norm is not None:
            if q_norm.size == cfg.head_dim:  # one weight per head, applied to every head
                layer.qk_norm = np.stack([q_norm] * cfg.n_head + [k_norm] * cfg.n_head_kv).astype(f32)
            else:
                layer.q_norm, layer.k_norm = q_norm, k_norm
        if w.has(f"{p}.ffn_gate_inp.weight"):
            layer.moe = MixtureOfExperts.load(w, i, cfg, self.activation)
        elif w.has(f"{p}.ffn_gate.weight"):
            layer.gate_up = self.project(f"{p}.ffn_gate", f"{p}.ffn_up")
            layer.n_ff = layer.gate_up.n_out // 2
        else:
            layer.gate_up = self.project(f"{p}.ffn_up")
            layer.n_ff = layer.gate_up.n_out // 2 if self.fused_gate_up else 0
        if layer.moe is None:
            layer.down = self.project(f"{p}.ffn_down")
        self.fold_layer(layer)
        return layer

    def fold_layer(self, lw: Layer) -> None:
        """Where the kernel set can (fast numerics, dense weights), fold each RMSNorm weight into
        the projection it feeds and the attention scale into Q's columns: two multiplies per
        norm and one per layer fewer on every token (a decode step is dominated by the number
        of NumPy calls around small matmuls). Not with Q/K norms (they would undo the
        scale) or a clamp of [q|k|v] (it must see the unscaled values)."""
        for norm, proj in ((lw.attn_norm, lw.qkv), (lw.ffn_norm, lw.gate_up)):
            if (norm is not None and norm.kind == "rms" and norm.weight is not None and norm.bias is None
                    and proj is not None and self.k.fold(proj, in_scale=norm.weight)):
                norm.weight = None
        cfg = self.config
        if lw.qk_norm is None and lw.q_norm is None and cfg.clamp_kqv <= 0.0:
            scale = np.ones(lw.qkv.n_out, dtype=f32)
            scale[: cfg.n_head * cfg.head_dim] = f32(self.kq_scale)
            lw.q_scaled = self.k.fold(lw.qkv, out_scale=scale)

    def rope_tables(self) -> list[RopeTable]:
        """One RoPE table per layer; sliding-window layers share one with their own base.
        Frequency factors: rope_freqs (Llama 3), or LongRoPE's long/short ones chosen by
        context size (llama_model::get_rope_factors)."""
        cfg, w, n_pos = self.config, self.w, self.kv.n_ctx_seq
        factors = w.optional_vector("rope_freqs.weight")
        if factors is None:
            long = n_pos > cfg.rope.n_ctx_orig
            factors = w.optional_vector("rope_factors_long.weight" if long else "rope_factors_short.weight")
        full = RopeTable(cfg.rope, n_pos, factors)
        swa = RopeTable(cfg.rope_swa(), n_pos, factors) if any(cfg.is_swa(i) for i in range(cfg.n_layer)) else full
        return [swa if cfg.is_swa(i) else full for i in range(cfg.n_layer)]

    # -- the forward pass ------------------------------------------------------------------
    def decode(self, batch: Batch) -> F32:
        """Logits (n_outputs, n_vocab) for the rows the batch asks for."""
        h = self.hidden(batch)
        if h.shape[0] == 0:
            return np.zeros((0, self.config.n_vocab), dtype=f32)
        return self.head(h)

    def hidden(self, batch: Batch) -> F32:
        """Run every block over the batch; returns the final-normed hidden rows asked for."""
        self.check_batch(batch)
        tokens = np.fromiter((t for c in batch.chunks for t in c.tokens), dtype=np.int64)
        att = self.k.attention(self.kv, batch, self.causal)
        x = self.embed(tokens, att.positions)
        cvec = self.control_vector
        for layer in range(self.config.n_layer):
            x = self.block(layer, x, att)
            if cvec is not None and (direction := cvec[layer]) is not None:
                x += direction  # build_cvec: after the block's last residual add
        for c in batch.chunks:
            self.kv.commit(c.seq, c.pos + len(c.tokens))
        return self.norm(self.output_norm, x[batch.output_rows()])

    def check_batch(self, batch: Batch) -> None:
        seen: set[int] = set()
        for c in batch.chunks:
            if c.seq in seen:
                raise InvalidRequestError(f"sequence {c.seq} appears twice in one batch")
            seen.add(c.seq)
            for t in c.tokens:
                if not 0 <= t < self.config.n_vocab:
                    raise InvalidRequestError(f"token id {t} out of range (vocabulary has {self.config.n_vocab})")
            self.kv.reserve(c.seq, c.pos, len(c.tokens))

    def embed(self, tokens: I64, positions: I64) -> F32:
        x: F32 = self.tok_embd.rows(tokens)
        if self.embed_scale:
            x *= f32(self.embed_scale)
        return x

    def block(self, layer: int, x: F32, att: AttentionPass) -> F32:
        lw, cfg = self.layers[layer], self.config
        t, h, hkv = x.shape[0], cfg.n_head, cfg.n_head_kv
        y = lw.qkv(self.norm(lw.attn_norm, x))
        if cfg.clamp_kqv > 0.0:
            np.clip(y, -cfg.clamp_kqv, cfg.clamp_kqv, out=y)
        qk = self.queries_keys(lw, y)
        if self.uses_rope:
            self.rope_ops[layer].apply(qk, att.positions)
        scale = 1.0 if lw.q_scaled else self.kq_scale
        if self.scale_queries and scale != 1.0:
            qk[:, :h] *= scale  # a Python float: rounded to float32 as f32() would, faster
            scale = 1.0
        v = y[:, (h + hkv) * cfg.head_dim :].reshape(t, hkv, cfg.head_dim_v)
        window = cfg.sliding_window if cfg.is_swa(layer) else 0
        a = att.attend(layer, qk[:, :h], qk[:, h:], v, scale, window=window, softcap=self.attn_softcap)
        x = self.residual(x, lw.wo(a), lw.post_attn_norm)
        return self.residual(x, self.ffn(lw, self.norm(lw.ffn_norm, x)), lw.post_ffn_norm)

    def queries_keys(self, lw: Layer, y: F32) -> F32:
        """Q's and K's heads side by side (T, H+Hkv, Dh) out of [q|k|v], normed if the layer says."""
        cfg = self.config
        t, nq, nk = y.shape[0], cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        shape = (t, cfg.n_head + cfg.n_head_kv, cfg.head_dim)
        if lw.q_norm is not None and lw.k_norm is not None:  # over the whole width
            q = self.k.rms_norm(y[:, :nq], lw.q_norm, cfg.norm_eps)
            k = self.k.rms_norm(y[:, nq : nq + nk], lw.k_norm, cfg.norm_eps)
            return np.concatenate([q, k], axis=1).reshape(shape)
        qk = y[:, : nq + nk].reshape(shape)
        return qk if lw.qk_norm is None else self.k.rms_norm(qk, lw.qk_norm, cfg.norm_eps)

    def ffn(self, lw: Layer, m: F32) -> F32:
        if lw.moe is not None:
            return lw.moe(m, self.k)
        assert lw.gate_up is not None and lw.down is not None
        y = lw.gate_up(m)
        silu = self.activation == "silu"
        if lw.n_ff:
            return lw.down(self.k.swiglu(y, lw.n_ff) if silu else self.k.geglu(y, lw.n_ff))
        return lw.down(self.k.silu(y) if silu else self.k.gelu(y))

    def residual(self, x: F32, a: F32, post: Norm | None) -> F32:
        """x + post_norm(a) (times the residual scale), in place."""
        a = self.norm(post, a)
        if self.residual_scale != 1.0:
            a *= self.residual_scale
        x += a
        return x

    def norm(self, n: Norm | None, x: F32) -> F32:
        if n is None:
            return x
        if n.kind == "layer":
            return layer_norm(x, n.weight, n.bias, n.eps)
        y = self.k.rms_norm(x, n.weight, n.eps)
        if n.bias is not None:
            y += n.bias
        return y

    def head(self, h: F32) -> F32:
        logits = self.head_proj(h)
        if self.final_softcap:
            logits *= f32(1.0 / self.final_softcap)
            np.tanh(logits, out=logits)
            logits *= f32(self.final_softcap)
        return logits

    # -- context shift ---------------------------------------------------------------------
    def rerotate_keys(self, layer: int, keys: F32, delta: int) -> F32:
        """Rotate cached keys (Hkv, n, Dh) by `delta` positions (context shift); keys without
        RoPE carry no position to fix (llama.cpp skips the K-shift for rope type none)."""
        if not self.uses_rope:
            return keys
        n = keys.shape[1]
        x = keys.transpose(1, 0, 2).copy()  # (n, Hkv, Dh)
        # RoPE is additive in the angle: rotating by p then by delta equals rotating by p+delta;
        # negative deltas use the table's symmetry cos(-a)=cos(a), sin(-a)=-sin(a).
        table = self.ropes[layer]
        pos = np.full(n, abs(delta), dtype=np.int64)
        if delta < 0:
            saved = table.sin
            table.sin = -saved
            try:
                table.apply(x, pos)
            finally:
                table.sin = saved
        else:
            table.apply(x, pos)
        return x.transpose(1, 0, 2)
