"""Tiny random GGUF models, one per architecture, written with gguf.GGUFWriter.

The same code writes the files for the tests (.venv) and for make_expected.py (which hands
them to the llama-cpp-python oracle), so both sides see byte-identical models. Weights are
F32 so that llama.cpp's matmuls stay in float32 (quantized weights would make it quantize
the activations too, which is the quant helper's concern). Every architecture gets the
same small shape: 2 layers, width 64, 4 query heads of 16, 2 KV heads, vocabulary 300.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

N_VOCAB = 300
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_FF = 96
N_LAYER = 2
N_CTX_TRAIN = 128
N_CTX = 64  # context both engines run with
N_EXPERT = 4
N_EXPERT_USED = 2

# The prompt every test evaluates: 32 tokens avoiding the 3 special ids.
PROMPT: list[int] = [int(t) for t in np.random.default_rng(1234).integers(3, N_VOCAB, size=32)]

EMBEDDING_ARCHS = frozenset({"bert", "nomic-bert"})
RERANKERS = frozenset({"bert"})  # models written with a classifier head


class Builder:
    """Collects metadata and random tensors for one model, then writes the GGUF."""

    def __init__(self, name: str, arch: str) -> None:
        self.arch = arch
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        self.rng = np.random.default_rng(seed)
        self.kv: list[tuple[str, Any, str]] = []
        self.tensors: list[tuple[str, np.ndarray[Any, Any]]] = []

    # -- metadata --------------------------------------------------------------------
    def set(self, key: str, v: Any, kind: str) -> None:
        """Add or replace a metadata key (architecture variants override common values)."""
        self.kv = [e for e in self.kv if e[0] != key] + [(key, v, kind)]

    def u32(self, key: str, v: int) -> None:
        self.set(f"{self.arch}.{key}", v, "u32")

    def f32(self, key: str, v: float) -> None:
        self.set(f"{self.arch}.{key}", v, "f32")

    def flag(self, key: str, v: bool) -> None:
        self.set(f"{self.arch}.{key}", v, "bool")

    def text(self, key: str, v: str) -> None:
        self.set(f"{self.arch}.{key}", v, "str")

    # -- tensors ---------------------------------------------------------------------
    def matrix(self, name: str, n_out: int, n_in: int) -> None:
        a = self.rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        self.tensors.append((name, a.astype(np.float32)))

    def experts(self, name: str, n_out: int, n_in: int) -> None:
        a = self.rng.standard_normal((N_EXPERT, n_out, n_in)) / np.sqrt(n_in)
        self.tensors.append((name, a.astype(np.float32)))

    def norm(self, name: str, n: int = N_EMBD, bias: bool = False) -> None:
        self.tensors.append((f"{name}.weight", (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)))
        if bias:
            self.bias(name, n)

    def bias(self, name: str, n: int) -> None:
        self.tensors.append((f"{name}.bias", (0.1 * self.rng.standard_normal(n)).astype(np.float32)))

    def vector(self, name: str, values: np.ndarray[Any, Any]) -> None:
        self.tensors.append((name, values.astype(np.float32)))

    def embedding(self, name: str, rows: int, scale: float = 1.0) -> None:
        self.tensors.append((name, (scale * self.rng.standard_normal((rows, N_EMBD))).astype(np.float32)))

    def write(self, path: Path) -> None:
        w = gguf.GGUFWriter(str(path), self.arch)
        w.add_name("tiny test model")  # llama.cpp patches vocabularies of models named e.g. "phi3"
        for key, v, kind in self.kv:
            if kind == "u32":
                w.add_uint32(key, v)
            elif kind == "f32":
                w.add_float32(key, v)
            elif kind == "bool":
                w.add_bool(key, v)
            else:
                w.add_string(key, v)
        add_tokenizer(w)
        for name, a in self.tensors:
            w.add_tensor(name, a)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def add_tokenizer(w: gguf.GGUFWriter) -> None:
    """A trivial SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then plain words."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"w{i}" for i in range(N_VOCAB - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (N_VOCAB - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(N_VOCAB)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)


def common(b: Builder, *, rms: bool = True, n_ff: int = N_FF) -> None:
    b.u32("context_length", N_CTX_TRAIN)
    b.u32("embedding_length", N_EMBD)
    b.u32("block_count", N_LAYER)
    b.u32("feed_forward_length", n_ff)
    b.u32("attention.head_count", N_HEAD)
    b.u32("attention.head_count_kv", N_HEAD_KV)
    b.f32("rope.freq_base", 10000.0)
    if rms:
        b.f32("attention.layer_norm_rms_epsilon", 1e-5)
    else:
        b.f32("attention.layer_norm_epsilon", 1e-5)


def qkv(b: Builder, i: int, *, bias: bool = False, fused: bool = False) -> None:
    n_q, n_kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    p = f"blk.{i}"
    if fused:
        b.matrix(f"{p}.attn_qkv.weight", n_q + 2 * n_kv, N_EMBD)
        if bias:
            b.bias(f"{p}.attn_qkv", n_q + 2 * n_kv)
    else:
        for x, n in (("q", n_q), ("k", n_kv), ("v", n_kv)):
            b.matrix(f"{p}.attn_{x}.weight", n, N_EMBD)
            if bias:
                b.bias(f"{p}.attn_{x}", n)
    b.matrix(f"{p}.attn_output.weight", N_EMBD, n_q)


def swiglu_ffn(b: Builder, i: int) -> None:
    p = f"blk.{i}"
    b.matrix(f"{p}.ffn_gate.weight", N_FF, N_EMBD)
    b.matrix(f"{p}.ffn_up.weight", N_FF, N_EMBD)
    b.matrix(f"{p}.ffn_down.weight", N_EMBD, N_FF)


def seq_ffn(b: Builder, i: int) -> None:
    p = f"blk.{i}"
    b.matrix(f"{p}.ffn_up.weight", N_FF, N_EMBD)
    b.bias(f"{p}.ffn_up", N_FF)
    b.matrix(f"{p}.ffn_down.weight", N_EMBD, N_FF)
    b.bias(f"{p}.ffn_down", N_EMBD)


def head(b: Builder, *, tied: bool = False, norm_bias: bool = False) -> None:
    # Tied heads (and Gemma's sqrt(n_embd) input scale) get small embeddings so logits stay O(1-10).
    b.embedding("token_embd.weight", N_VOCAB, 0.15 if tied else 1.0)
    b.norm("output_norm", bias=norm_bias)
    if not tied:
        b.matrix("output.weight", N_VOCAB, N_EMBD)


# -- architectures -------------------------------------------------------------------
def llama_like(b: Builder, *, q_bias: bool = False, qk_norm: bool = False) -> None:
    common(b)
    head(b)
    for i in range(N_LAYER):
        b.norm(f"blk.{i}.attn_norm")
        qkv(b, i, bias=q_bias)
        if qk_norm:
            b.norm(f"blk.{i}.attn_q_norm", HEAD_DIM)
            b.norm(f"blk.{i}.attn_k_norm", HEAD_DIM)
        b.norm(f"blk.{i}.ffn_norm")
        swiglu_ffn(b, i)


def llama_yarn(b: Builder) -> None:
    llama_like(b)
    b.text("rope.scaling.type", "yarn")
    b.f32("rope.scaling.factor", 4.0)
    b.u32("rope.scaling.original_context_length", 16)


def qwen2(b: Builder) -> None:
    llama_like(b, q_bias=True)


def qwen2_linear(b: Builder) -> None:
    llama_like(b, q_bias=True)
    b.text("rope.scaling.type", "linear")
    b.f32("rope.scaling.factor", 2.0)


def qwen3(b: Builder) -> None:
    llama_like(b, qk_norm=True)


def granite(b: Builder) -> None:
    llama_like(b)
    b.f32("logit_scale", 2.5)
    b.f32("residual_scale", 0.5)
    b.f32("embedding_scale", 3.0)
    b.f32("attention.scale", 0.2)


def mixtral(b: Builder) -> None:
    common(b)
    b.u32("expert_count", N_EXPERT)
    b.u32("expert_used_count", N_EXPERT_USED)
    head(b)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        b.norm(f"{p}.attn_norm")
        qkv(b, i)
        b.norm(f"{p}.ffn_norm")
        b.matrix(f"{p}.ffn_gate_inp.weight", N_EXPERT, N_EMBD)
        b.experts(f"{p}.ffn_gate_exps.weight", N_FF, N_EMBD)
        b.experts(f"{p}.ffn_up_exps.weight", N_FF, N_EMBD)
        b.experts(f"{p}.ffn_down_exps.weight", N_EMBD, N_FF)


def gemma_family(b: Builder, *, post_norms: bool, qk_norm: bool) -> None:
    common(b)
    head(b, tied=True)
    b.u32("attention.key_length", HEAD_DIM)
    b.u32("attention.value_length", HEAD_DIM)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        b.norm(f"{p}.attn_norm")
        qkv(b, i)
        if qk_norm:
            b.norm(f"{p}.attn_q_norm", HEAD_DIM)
            b.norm(f"{p}.attn_k_norm", HEAD_DIM)
        if post_norms:
            b.norm(f"{p}.post_attention_norm")
            b.norm(f"{p}.post_ffw_norm")
        b.norm(f"{p}.ffn_norm")
        swiglu_ffn(b, i)


def gemma(b: Builder) -> None:
    gemma_family(b, post_norms=False, qk_norm=False)


def gemma2(b: Builder) -> None:
    gemma_family(b, post_norms=True, qk_norm=False)
    b.u32("attention.sliding_window", 8)
    b.f32("attn_logit_softcapping", 5.0)
    b.f32("final_logit_softcapping", 3.0)


def gemma3(b: Builder) -> None:
    gemma_family(b, post_norms=True, qk_norm=True)
    b.u32("attention.sliding_window", 8)
    b.u32("attention.sliding_window_pattern", 2)
    b.f32("rope.freq_base", 100000.0)
    b.f32("rope.freq_base_swa", 1000.0)


def phi3(b: Builder) -> None:
    common(b)
    n_rot = HEAD_DIM // 2  # partial rotary
    b.u32("rope.dimension_count", n_rot)
    b.text("rope.scaling.type", "longrope")
    b.f32("rope.scaling.attn_factor", 1.19)
    b.u32("rope.scaling.original_context_length", 32)
    head(b)
    b.vector("rope_factors_long.weight", 1.0 + 3.0 * b.rng.random(n_rot // 2))
    b.vector("rope_factors_short.weight", 1.0 + 0.2 * b.rng.random(n_rot // 2))
    for i in range(N_LAYER):
        p = f"blk.{i}"
        b.norm(f"{p}.attn_norm")
        qkv(b, i, fused=True)
        b.norm(f"{p}.ffn_norm")
        b.matrix(f"{p}.ffn_up.weight", 2 * N_FF, N_EMBD)
        b.matrix(f"{p}.ffn_down.weight", N_EMBD, N_FF)


def gpt2(b: Builder) -> None:
    common(b, rms=False)
    head(b, norm_bias=True)
    b.embedding("position_embd.weight", N_CTX_TRAIN)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        b.norm(f"{p}.attn_norm", bias=True)
        qkv(b, i, bias=True, fused=True)
        b.bias(f"{p}.attn_output", N_EMBD)
        b.norm(f"{p}.ffn_norm", bias=True)
        seq_ffn(b, i)


def starcoder2(b: Builder) -> None:
    common(b, rms=False)
    head(b, norm_bias=True)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        b.norm(f"{p}.attn_norm", bias=True)
        qkv(b, i, bias=True)
        b.bias(f"{p}.attn_output", N_EMBD)
        b.norm(f"{p}.ffn_norm", bias=True)
        seq_ffn(b, i)


def olmo2(b: Builder) -> None:
    common(b)
    b.u32("attention.sliding_window", 8)
    b.u32("attention.sliding_window_pattern", 2)
    head(b)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        qkv(b, i)
        b.norm(f"{p}.attn_q_norm", N_HEAD * HEAD_DIM)
        b.norm(f"{p}.attn_k_norm", N_HEAD_KV * HEAD_DIM)
        b.norm(f"{p}.post_attention_norm")
        b.norm(f"{p}.post_ffw_norm")
        swiglu_ffn(b, i)


def bert_family(b: Builder, *, nomic: bool) -> None:
    common(b, rms=False)
    b.flag("attention.causal", False)
    b.u32("pooling_type", 1)
    b.set("tokenizer.ggml.token_type_count", 2, "u32")
    b.embedding("token_embd.weight", N_VOCAB)
    b.embedding("token_types.weight", 2)
    if not nomic:
        b.embedding("position_embd.weight", N_CTX_TRAIN)
    b.norm("token_embd_norm", bias=True)
    for i in range(N_LAYER):
        p = f"blk.{i}"
        qkv(b, i, bias=not nomic, fused=nomic)
        if not nomic:
            b.bias(f"{p}.attn_output", N_EMBD)
        b.norm(f"{p}.attn_output_norm", bias=True)
        if nomic:
            swiglu_ffn(b, i)
        else:
            seq_ffn(b, i)
        b.norm(f"{p}.layer_output_norm", bias=True)
    if not nomic:  # a reranker head (pooling rank), written last so the other tensors keep their values
        b.matrix("cls.weight", N_EMBD, N_EMBD)
        b.bias("cls", N_EMBD)
        b.matrix("cls.output.weight", 1, N_EMBD)
        b.bias("cls.output", 1)


def bert(b: Builder) -> None:
    bert_family(b, nomic=False)


def nomic_bert(b: Builder) -> None:
    bert_family(b, nomic=True)


# name -> (GGUF architecture, builder). Variants exercise RoPE scaling and MoE routing.
MODELS: dict[str, tuple[str, Callable[[Builder], None]]] = {
    "llama": ("llama", llama_like),
    "llama-yarn": ("llama", llama_yarn),
    "mixtral": ("llama", mixtral),
    "qwen2": ("qwen2", qwen2),
    "qwen2-linear": ("qwen2", qwen2_linear),
    "qwen3": ("qwen3", qwen3),
    "granite": ("granite", granite),
    "gemma": ("gemma", gemma),
    "gemma2": ("gemma2", gemma2),
    "gemma3": ("gemma3", gemma3),
    "phi3": ("phi3", phi3),
    "gpt2": ("gpt2", gpt2),
    "starcoder2": ("starcoder2", starcoder2),
    "olmo2": ("olmo2", olmo2),
    "bert": ("bert", bert),
    "nomic-bert": ("nomic-bert", nomic_bert),
}


# Command-line RoPE flags on top of a model above: name -> (model, RopeOverrides fields).
# "none" must ignore the GGUF's linear factor; Gemma 2's sliding layers keep their base.
ROPE_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2-yarn-flags": ("qwen2", {"scaling_type": "yarn", "freq_scale": 0.25, "yarn_orig_ctx": 16}),
    "qwen2-none-flags": ("qwen2-linear", {"scaling_type": "none"}),
    "gemma2-base-flags": ("gemma2", {"freq_base": 500.0, "freq_scale": 0.5}),
    "llama-yarn-beta-flags": ("llama-yarn", {"yarn_beta_fast": 8.0, "yarn_beta_slow": 2.0, "yarn_ext_factor": 0.5}),
}

# llama.cpp's context-parameter names for the same flags (what the oracle is given).
LLAMA_CPP_ROPE_PARAMS = {
    "scaling_type": "rope_scaling_type", "freq_base": "rope_freq_base", "freq_scale": "rope_freq_scale",
    "yarn_orig_ctx": "yarn_orig_ctx", "yarn_ext_factor": "yarn_ext_factor", "yarn_attn_factor": "yarn_attn_factor",
    "yarn_beta_fast": "yarn_beta_fast", "yarn_beta_slow": "yarn_beta_slow",
}
SCALING_TYPE_IDS = {"none": 0, "linear": 1, "yarn": 2}


def oracle_rope_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    return {
        LLAMA_CPP_ROPE_PARAMS[k]: SCALING_TYPE_IDS[v] if k == "scaling_type" else v for k, v in flags.items()
    }


def write_model(name: str, path: Path) -> Path:
    """Write model `name` (a key of MODELS) to `path`, deterministically."""
    arch, build = MODELS[name]
    b = Builder(name, arch)
    build(b)
    b.write(path)
    return path
