"""The models a server serves: one `ModelSpec` per model, from the flags or a `--config-file`
(llama-cpp-python's format: a `models` list, JSON or YAML), checked before anything loads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgi.control_vector_settings import ControlVectorSpec
from asgi.startup_checks import SettingsError, check_kv_fits, read_text
from pyllama.errors import InvalidRequestError
from pyllama.kv_override import KVOverride, parse_kv_overrides

log = logging.getLogger("asgi.settings")


@dataclass
class ModelSpec:
    """One model the server can serve, and how to load it."""

    path: Path
    aliases: list[str]
    tags: list[str] = field(default_factory=list)
    n_ctx: int = 0  # 0 = the model's training context
    n_batch: int = 2048
    n_ubatch: int = 512
    n_parallel: int = 1
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    embeddings: bool = False
    pooling: str | None = None
    chat_template: str | None = None
    weights: str = "auto"
    numerics: str = "fast"
    context_shift: bool = True
    kv_unified: bool = False
    rope: dict[str, Any] = field(default_factory=dict)
    lora: list[tuple[Path, float]] = field(default_factory=list)  # LoRA adapters (path, initial scale)
    control_vector: ControlVectorSpec = field(default_factory=ControlVectorSpec)  # --control-vector*
    kv_overrides: list[KVOverride] = field(default_factory=list)  # --override-kv (target and draft)
    # router mode (asgi/presets.py): where the model was declared, why it cannot load (a
    # preset naming a missing file or a hub repository: listed, and "failed" once asked
    # for), its preset as INI text, the flags it is served with, preset-only options
    source: str = ""
    unavailable: str = ""
    preset_ini: str = ""
    args: list[str] = field(default_factory=list)
    load_on_startup: bool = False
    stop_timeout: int = 10  # seconds an unload waits for the requests using the model
    # a cached model hidden from /models by a preset's dedup-cache-models (still servable by
    # name); not part of the comparison ?reload=1 makes to decide whether to unload a model
    hidden: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:
        return self.aliases[0]


ROPE_FLAGS = (
    "rope_scaling",
    "rope_scale",
    "rope_freq_base",
    "rope_freq_scale",
    "yarn_orig_ctx",
    "yarn_ext_factor",
    "yarn_attn_factor",
    "yarn_beta_slow",
    "yarn_beta_fast",
)


def kv_overrides(value: Any) -> list[KVOverride]:
    """--override-kv: repeatable (a list from argparse) or one string (a preset or config file);
    bad syntax exits 1 at start-up, as llama-server's argument parser does."""
    items = [] if value is None else [value] if isinstance(value, str) else list(value)
    try:
        return [o for item in items for o in parse_kv_overrides(str(item))]
    except InvalidRequestError as exc:
        raise SettingsError(f"--override-kv: {exc}") from None


def model_spec(path: Path, values: Mapping[str, Any], chat_template: str | None) -> ModelSpec:
    if not path.is_file():
        raise SettingsError(f"model file not found: {path}")
    # llama-server keeps the aliases in a std::set: sorted, and the first names the model
    aliases = sorted({a.strip() for a in str(values.get("alias", "")).split(",") if a.strip()}) or [path.name]
    spec = ModelSpec(path=path, aliases=aliases, chat_template=chat_template)
    spec.tags = [t.strip() for t in str(values.get("tags", "")).split(",") if t.strip()]
    for dest, attr in (("ctx_size", "n_ctx"), ("batch_size", "n_batch"), ("ubatch_size", "n_ubatch"), ("parallel", "n_parallel")):
        if dest in values:
            value = values[dest]
            if isinstance(value, bool) or not isinstance(value, int | str):  # a config file's JSON value
                raise SettingsError(f"--{dest.replace('_', '-')}: expected an integer, got {value!r}")
            try:
                setattr(spec, attr, int(value))
            except ValueError:
                raise SettingsError(f"--{dest.replace('_', '-')}: expected an integer, got {value!r}") from None
    for attr in ("cache_type_k", "cache_type_v", "pooling", "weights", "numerics"):
        if attr in values:
            if not isinstance(values[attr], str):
                raise SettingsError(f"--{attr.replace('_', '-')}: expected a string, got {values[attr]!r}")
            setattr(spec, attr, values[attr])
    spec.embeddings = bool(values.get("embeddings", False))
    if values.get("reranking"):  # llama.cpp's --reranking: embeddings on, pooling rank
        spec.embeddings, spec.pooling = True, "rank"
    spec.context_shift = bool(values.get("context_shift", True))
    spec.kv_unified = bool(values.get("kv_unified", False))
    spec.rope = {k: values[k] for k in ROPE_FLAGS if k in values}
    spec.kv_overrides = kv_overrides(values.get("override_kv"))
    if spec.n_parallel < 1:
        raise SettingsError(f"--parallel must be at least 1 (got {spec.n_parallel})")
    if spec.n_ctx < 0 or spec.n_batch < 1 or spec.n_ubatch < 1:
        raise SettingsError("--ctx-size must be >= 0 and --batch-size/--ubatch-size >= 1")
    if spec.weights not in ("auto", "dense", "packed"):
        raise SettingsError(f"--weights must be auto, dense or packed (got {spec.weights!r})")
    if spec.numerics not in ("fast", "exact"):
        raise SettingsError(f"--numerics must be fast or exact (got {spec.numerics!r})")
    if spec.embeddings and spec.n_batch > spec.n_ubatch:
        spec.n_batch = spec.n_ubatch  # llama-server: embeddings need the whole input in one ubatch
    check_kv_fits(spec.path, spec.n_ctx, spec.n_parallel, spec.cache_type_k, spec.cache_type_v, spec.kv_unified,
                  spec.numerics, spec.kv_overrides)
    return spec


# llama-cpp-python config keys -> our flag names (per model entry).
CONFIG_MODEL_KEYS = {
    "model_alias": "alias",
    "alias": "alias",
    "n_ctx": "ctx_size",
    "ctx_size": "ctx_size",
    "n_batch": "batch_size",
    "n_ubatch": "ubatch_size",
    "n_parallel": "parallel",
    "parallel": "parallel",
    "type_k": "cache_type_k",
    "type_v": "cache_type_v",
    "cache_type_k": "cache_type_k",
    "cache_type_v": "cache_type_v",
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "pooling": "pooling",
    "reranking": "reranking",
    "weights": "weights",
    "numerics": "numerics",
    "rope_freq_base": "rope_freq_base",
    "rope_freq_scale": "rope_freq_scale",
    "tags": "tags",
}
CONFIG_IGNORED = {"n_gpu_layers", "main_gpu", "tensor_split", "use_mlock", "use_mmap", "n_threads", "n_threads_batch",
                  "verbose", "offload_kqv", "flash_attn", "split_mode", "vocab_only", "logits_all", "numa"}


def load_config(path: str) -> dict[str, Any]:
    text = read_text(path, "--config-file")
    if path.endswith((".yaml", ".yml")):
        import yaml  # server extra

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"--config-file {path}: not valid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--config-file {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise SettingsError(f"--config-file {path}: expected an object with a non-empty 'models' list")
    return data


def config_models(data: dict[str, Any], base: dict[str, Any], path: str) -> list[ModelSpec]:
    specs = []
    for i, entry in enumerate(data["models"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise SettingsError(f"--config-file {path}: models[{i}] needs a 'model' path")
        values = dict(base)
        values.pop("alias", None)
        for key, value in entry.items():
            if key in CONFIG_MODEL_KEYS:
                values[CONFIG_MODEL_KEYS[key]] = value
            elif key not in CONFIG_IGNORED | {"model", "chat_format", "chat_template"}:
                log.warning("config models[%d]: ignoring unknown key %r", i, key)
        template = entry.get("chat_template") or entry.get("chat_format") or base.get("chat_template")
        model_path = Path(entry["model"])
        if not model_path.is_absolute():
            model_path = (Path(path).parent / model_path).resolve()
        specs.append(model_spec(model_path, values, template))
    names = [a for s in specs for a in s.aliases]
    if len(names) != len(set(names)):
        raise SettingsError(f"--config-file {path}: model aliases must be unique ({', '.join(names)})")
    return specs
