"""ModelConfig: the typed view of a GGUF file's hyper-parameters.

GGUF stores hyper-parameters under `{architecture}.{key}`; llama.cpp reads them in
`llama_model::load_hparams`. This module reads the same keys with the same defaults, so
that model code never touches the raw metadata dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile


@dataclass
class RopeParams:
    """Rotary embedding settings after applying command-line overrides (see llama.cpp cparams)."""

    n_rot: int
    freq_base: float
    freq_scale: float = 1.0
    neox: bool = False
    scaling_type: str = "none"  # none | linear | yarn | longrope
    n_ctx_orig: int = 0
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0


@dataclass
class ModelConfig:
    """Hyper-parameters shared by every architecture; architecture extras go in `extra`."""

    arch: str
    name: str
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    head_dim_v: int
    n_ff: int
    norm_eps: float
    rope: RopeParams
    sliding_window: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    attention_scale: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_embd_k_gqa(self) -> int:
        return self.head_dim * self.n_head_kv

    @property
    def n_embd_v_gqa(self) -> int:
        return self.head_dim_v * self.n_head_kv


class MetadataReader:
    """Typed access to `{arch}.*` keys with errors that name the file and key."""

    def __init__(self, gguf: GGUFFile) -> None:
        self.gguf = gguf
        self.arch = gguf.architecture

    def _get(self, key: str) -> Any:
        full = key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"
        return self.gguf.metadata.get(full)

    def has(self, key: str) -> bool:
        return self._get(key) is not None

    def integer(self, key: str, default: int | None = None) -> int:
        v = self._get(key)
        if v is None:
            if default is None:
                raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} is missing")
            return default
        if isinstance(v, np.ndarray):
            # Per-layer arrays (e.g. head_count on some models): callers wanting the array use .array().
            if v.size == 0:
                raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} is an empty array")
            v = v.flat[0]
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} must be an integer, got {v!r}")
        return int(v)

    def number(self, key: str, default: float | None = None) -> float:
        v = self._get(key)
        if v is None:
            if default is None:
                raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} is missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} must be a number, got {v!r}")
        return float(v)

    def text(self, key: str, default: str | None = None) -> str:
        v = self._get(key)
        if v is None:
            if default is None:
                raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} is missing")
            return default
        if not isinstance(v, str):
            raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} must be a string, got {v!r}")
        return v

    def flag(self, key: str, default: bool) -> bool:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, bool | np.bool_):
            raise ModelLoadError(f"{self.gguf.path}: metadata key {self.arch}.{key} must be a boolean, got {v!r}")
        return bool(v)


# Architectures whose RoPE rotates the two halves of each head (GPT-NeoX style) rather than
# adjacent pairs; from llama_model_rope_type() in llama-model.cpp.
NEOX_ROPE_ARCHS = frozenset(
    {
        "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi2", "phi3",
        "stablelm", "starcoder2", "olmo2", "gptneox", "falcon", "bert", "nomic-bert", "codeshell",
    }
)


def read_config(gguf: GGUFFile) -> ModelConfig:
    """Build the ModelConfig for any architecture from its GGUF metadata."""
    md = MetadataReader(gguf)
    arch = md.arch
    n_embd = md.integer("embedding_length")
    n_head = md.integer("attention.head_count")
    if n_head <= 0 or n_embd <= 0:
        raise ModelLoadError(f"{gguf.path}: absurd dimensions (embedding_length={n_embd}, head_count={n_head})")
    n_head_kv = md.integer("attention.head_count_kv", n_head)
    head_dim = md.integer("attention.key_length", n_embd // n_head)
    head_dim_v = md.integer("attention.value_length", head_dim)
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    n_vocab = md.integer("vocab_size", len(tokens) if tokens is not None else 0)
    if n_vocab == 0 and "token_embd.weight" in gguf.tensors:
        n_vocab = gguf.tensors["token_embd.weight"].shape[0]
    n_ctx_train = md.integer("context_length", 2048)
    rope_neox = arch in NEOX_ROPE_ARCHS
    rope = RopeParams(
        n_rot=md.integer("rope.dimension_count", head_dim),
        freq_base=md.number("rope.freq_base", 10000.0),
        freq_scale=1.0 / md.number("rope.scaling.factor", 1.0) if md.number("rope.scaling.factor", 0.0) else 1.0,
        neox=rope_neox,
        scaling_type=md.text("rope.scaling.type", "none"),
        n_ctx_orig=md.integer("rope.scaling.original_context_length", n_ctx_train),
        attn_factor=md.number("rope.scaling.attn_factor", 1.0),
    )
    n_layer = md.integer("block_count")
    if not (0 < n_layer < 100_000):
        raise ModelLoadError(f"{gguf.path}: absurd block_count {n_layer}")
    return ModelConfig(
        arch=arch,
        name=md.text("general.name", arch),
        n_vocab=n_vocab,
        n_ctx_train=n_ctx_train,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_ff=md.integer("feed_forward_length", 4 * n_embd),
        norm_eps=md.number("attention.layer_norm_rms_epsilon", md.number("attention.layer_norm_epsilon", 1e-5)),
        rope=rope,
        sliding_window=md.integer("attention.sliding_window", 0),
        n_expert=md.integer("expert_count", 0),
        n_expert_used=md.integer("expert_used_count", 0),
        attention_scale=md.number("attention.scale", 0.0),
    )
