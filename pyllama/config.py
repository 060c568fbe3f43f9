"""ModelConfig: the typed view of a GGUF file's hyper-parameters.

GGUF stores hyper-parameters under `{architecture}.{key}`; llama.cpp reads them in
`llama_model::load_hparams`. This module reads the same keys with the same defaults, so
that model code never touches the raw metadata dictionary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile


@dataclass
class RopeParams:
    """Rotary embedding settings after applying command-line overrides (see llama.cpp cparams).

    `freq_scale`, `ext_factor` and `attn_factor` are the effective values ggml_rope_ext gets;
    the `*_train` fields keep what the GGUF said, so overrides can be re-applied from scratch
    (`finalize_rope`).
    """

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
    freq_base_train: float = 0.0
    freq_scale_train: float = 1.0
    scaling_type_train: str = "linear"
    rope_attn_factor: float = 1.0  # {arch}.rope.scaling.attn_factor, multiplied in last


ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")


def finalize_rope(
    r: RopeParams,
    *,
    scaling_type: str | None = None,
    freq_base: float | None = None,
    freq_scale: float | None = None,
    yarn_orig_ctx: int | None = None,
    yarn_ext_factor: float | None = None,
    yarn_attn_factor: float | None = None,
    yarn_beta_fast: float | None = None,
    yarn_beta_slow: float | None = None,
) -> None:
    """Derive the effective RoPE parameters exactly as llama_context's constructor does.

    Why it matters: YaRN's attention factor is not the GGUF's number but
    mscale(factor) / (1 + 0.1 ln factor) (ggml multiplies the second term back in), and
    scaling type `none` must ignore any scale factor.
    """
    r.scaling_type = scaling_type or r.scaling_type_train
    if r.scaling_type not in ROPE_SCALING_TYPES:
        raise ModelLoadError(
            f"unknown RoPE scaling type {r.scaling_type!r} (supported: {', '.join(ROPE_SCALING_TYPES)})"
        )
    r.freq_base = freq_base if freq_base else r.freq_base_train
    r.freq_scale = freq_scale if freq_scale else r.freq_scale_train
    if yarn_orig_ctx:
        r.n_ctx_orig = yarn_orig_ctx
    if r.scaling_type == "none":
        r.freq_scale = 1.0
    if yarn_ext_factor is not None and yarn_ext_factor >= 0:
        r.ext_factor = yarn_ext_factor
    else:
        r.ext_factor = 1.0 if r.scaling_type == "yarn" else 0.0
    attn = yarn_attn_factor if yarn_attn_factor is not None and yarn_attn_factor >= 0 else 1.0
    if r.ext_factor != 0.0:
        factor = 1.0 / r.freq_scale
        mscale = 1.0 if factor <= 1.0 else 0.1 * math.log(factor) + 1.0
        attn = mscale / (1.0 + 0.1 * math.log(factor))
    r.attn_factor = attn * r.rope_attn_factor
    if yarn_beta_fast is not None and yarn_beta_fast >= 0:
        r.beta_fast = yarn_beta_fast
    if yarn_beta_slow is not None and yarn_beta_slow >= 0:
        r.beta_slow = yarn_beta_slow


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
    # Per-architecture extras (llama_hparams); zero means "not used" as in llama.cpp.
    swa_layers: tuple[bool, ...] = ()  # layer i uses the sliding window when swa_layers[i]
    rope_freq_base_swa: float = 0.0  # RoPE base of sliding-window layers (gemma2/3, olmo2)
    rope_freq_scale_swa: float = 1.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    logit_scale: float = 0.0
    residual_scale: float = 0.0
    embedding_scale: float = 0.0
    expert_weights_scale: float = 0.0
    clamp_kqv: float = 0.0
    causal: bool = True
    pooling: str = "unspecified"  # the model's default pooling (llama_pooling_type)
    n_token_types: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def is_swa(self, layer: int) -> bool:
        return bool(self.swa_layers) and self.swa_layers[layer] and self.sliding_window > 0

    def rope_swa(self) -> RopeParams:
        """RoPE of sliding-window layers: their own base and scale, the global YaRN settings
        (llama_model::get_rope_freq_base/scale); olmo2 turns YaRN off there."""
        r = replace(self.rope, freq_base=self.rope_freq_base_swa, freq_scale=self.rope_freq_scale_swa)
        if self.arch == "olmo2":
            r.ext_factor, r.attn_factor = 0.0, 1.0
        return r

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

    def raw(self, key: str) -> Any:
        """The plain metadata value (or None), for keys that may be a scalar or an array."""
        return self._get(key)

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
    factor = md.number("rope.scaling.factor", md.number("rope.scale_linear", 0.0))
    freq_base = md.number("rope.freq_base", 10000.0)
    rope = RopeParams(
        n_rot=md.integer("rope.dimension_count", head_dim),
        freq_base=freq_base,
        neox=rope_neox,
        n_ctx_orig=md.integer("rope.scaling.original_context_length", n_ctx_train),
        freq_base_train=freq_base,
        freq_scale_train=1.0 / factor if factor else 1.0,
        scaling_type_train=md.text("rope.scaling.type", "linear"),
        rope_attn_factor=md.number("rope.scaling.attn_factor", 1.0),
    )
    finalize_rope(rope)
    n_layer = md.integer("block_count")
    if not (0 < n_layer < 100_000):
        raise ModelLoadError(f"{gguf.path}: absurd block_count {n_layer}")
    config = ModelConfig(
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
        attn_softcap=md.number("attn_logit_softcapping", 0.0),
        final_softcap=md.number("final_logit_softcapping", 0.0),
        logit_scale=md.number("logit_scale", 0.0),
        residual_scale=md.number("residual_scale", 0.0),
        embedding_scale=md.number("embedding_scale", 0.0),
        expert_weights_scale=md.number("expert_weights_scale", 0.0),
        clamp_kqv=md.number("attention.clamp_kqv", 0.0),
        causal=md.flag("attention.causal", True),
        pooling=POOLING_TYPES.get(md.integer("pooling_type", -1), "unspecified"),
        n_token_types=md.integer("tokenizer.ggml.token_type_count", 0),
    )
    _sliding_window(md, config)
    return config


# llama_pooling_type enum values as stored in `{arch}.pooling_type`.
POOLING_TYPES = {-1: "unspecified", 0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}

# Architecture -> (sliding-window pattern default, default window or 0 = only when the GGUF
# has one). From each llama_model_<arch>::load_arch_hparams: the pattern n marks layer i as
# sliding-window when i % n < n - 1 (the last layer of each group is global).
SWA_ARCHS: dict[str, tuple[int, int]] = {"gemma2": (2, 4096), "gemma3": (6, 0), "olmo2": (4, 0)}


def _sliding_window(md: MetadataReader, config: ModelConfig) -> None:
    """Per-layer sliding-window flags and the RoPE those layers use (llama_hparams.is_swa)."""
    arch = config.arch
    if arch not in SWA_ARCHS:
        config.sliding_window = 0  # llama.cpp ignores the window for other architectures (phi3 disables it)
        return
    n_pattern, default_window = SWA_ARCHS[arch]
    config.sliding_window = md.integer("attention.sliding_window", default_window)
    if config.sliding_window <= 0:
        return
    raw = md.raw("attention.sliding_window_pattern")
    n = config.n_layer
    if isinstance(raw, np.ndarray) and raw.size == n:
        config.swa_layers = tuple(bool(b) for b in raw.tolist())
    else:
        if raw is not None:
            n_pattern = md.integer("attention.sliding_window_pattern")
        config.swa_layers = tuple(n_pattern == 0 or i % n_pattern < n_pattern - 1 for i in range(n))
    r = config.rope
    if arch == "gemma3":
        config.rope_freq_base_swa = md.number("rope.freq_base_swa", 10000.0)
    else:  # gemma2, olmo2
        config.rope_freq_base_swa = md.number("rope.freq_base_swa", r.freq_base_train)
    config.rope_freq_scale_swa = r.freq_scale_train if arch == "gemma2" else 1.0
