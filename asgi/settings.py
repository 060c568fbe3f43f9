"""Server settings: llama-server's flags and LLAMA_ARG_* variables, or a multi-model config file.

`parse_settings(argv, env)` is the one entry point: `pyllama-server` passes sys.argv, and
`hypercorn asgi.app:app` passes no arguments, so the same server can be configured by
the environment alone. A config file (llama-cpp-python's format: host, port and a
`models` list) describes several models served by one process and chosen per request
by the `"model"` field.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgi.control_vector_settings import check_control_vectors, control_vector_spec
from asgi.errors import ApiError
from asgi.flags import FLAGS, build_parser, display_name, env_values
from asgi.hf_cache import for_hf_flag
from asgi.hf_cache import list_cached_models as cached_models
from asgi.lora_settings import check_lora_files, lora_files
from asgi.model_specs import ModelSpec, config_models, kv_overrides, load_config, model_spec
from asgi.params import RequestLimits, check_grammar, schema_to_grammar
from asgi.reasoning_settings import reasoning_flags
from asgi.speed_flags import speed_settings
from asgi.startup_checks import SettingsError, api_keys, read_text
from pyllama import model_files
from pyllama.chat.reasoning import ReasoningConfig
from pyllama.errors import InvalidRequestError
from pyllama.json_limits import loads_bounded
from pyllama.sampling.fields import flag_values

__all__ = ["ModelSpec", "Settings", "SettingsError", "parse_settings"]

log = logging.getLogger(__name__)

REPO_WEB = Path(__file__).resolve().parent.parent / "web"

# Flags (besides pyllama.sampling.fields' table) whose value is a server-wide default for a
# request field: flag dest -> request field.
DEFAULT_FLAGS = {"n_predict": "n_predict", "keep": "n_keep"}


@dataclass
class Settings:
    models: list[ModelSpec]
    host: str = "127.0.0.1"
    port: int = 8080
    static_path: Path | None = REPO_WEB
    api_prefix: str = ""  # normalised: "" or "/name" (asgi/api_prefix.py)
    api_keys: list[str] = field(default_factory=list)
    ssl_key_file: Path | None = None
    ssl_cert_file: Path | None = None
    timeout: int = 600
    metrics: bool = False
    slots: bool = True
    props: bool = False
    slot_save_path: Path | None = None
    cors_origins: str = "*"
    log_format: str = "text"
    verbose: bool = False
    cache_prompt: bool = True
    cont_batching: bool = True
    slot_prompt_similarity: float = 0.5
    sampling: dict[str, Any] = field(default_factory=dict)  # request-field defaults
    system_prompt: str = ""
    models_max: int = 4  # 0: no limit
    models_autoload: bool = True
    router: bool = False  # --models-dir / --models-preset without -m: llama-server's router mode
    router_values: dict[str, Any] = field(default_factory=dict)  # the flags router mode re-reads on ?reload=1
    models_memory_mb: int = 0
    multi_model: bool = False
    ignored_flags: list[str] = field(default_factory=list)
    max_body_size: int = 64 << 20
    prep_process_bytes: int = 1 << 20  # bodies this large are prepared in a child process (0: never)
    max_queue: int | None = None  # None: max(64, 4 x the model's slots); -1: no limit
    shutdown_timeout: float = 10.0
    limits: RequestLimits = field(default_factory=RequestLimits)
    hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])  # --host a,b: listen on each
    sleep_idle_seconds: int = -1  # unload the model after this long without a task (-1: never)
    ui_mcp_proxy: bool = False  # serve /cors-proxy
    reasoning: ReasoningConfig = field(default_factory=ReasoningConfig)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    n_threads: int | None = None  # -t; None: pyllama.cli.blas_threads.DEFAULT_THREADS
    n_threads_batch: int | None = None  # -tb; None: same as -t
    speculative: Any = None  # pyllama.speculative.SpecParams: the requests' default (asgi/speed_flags.py)
    model_draft: Path | None = None  # -md: the draft model every served model speculates with
    stream_detach_timeout: float = 300.0  # a resumable stream without a reader is cancelled after this
    cache_ram: int = 8192  # MiB of host-memory prompt cache (-1: no limit, 0: off); pyllama.prompt_cache
    cache_idle_slots: bool = True  # save idle slots to that cache when another slot starts a task

    @property
    def default_model(self) -> ModelSpec:
        return self.models[0]

    def queue_limit(self, spec: ModelSpec) -> int:
        """How many tasks may wait for one of `spec`'s slots (-1: unbounded)."""
        if self.max_queue is None:
            return max(64, 4 * spec.n_parallel)
        return self.max_queue


def _sampling(values: dict[str, Any]) -> dict[str, Any]:
    """The request-field defaults the flags set (only those given: a request's own value wins)."""
    try:
        sampling = flag_values(values)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    except InvalidRequestError as exc:
        raise SettingsError(f"--samplers: {exc}") from None
    sampling.update({field: values[dest] for dest, field in DEFAULT_FLAGS.items() if dest in values})
    if "cache_prompt" in values:
        sampling["cache_prompt"] = bool(values["cache_prompt"])
    if "grammar" in values:
        sampling["grammar"] = values["grammar"]
    if "grammar_file" in values:
        sampling["grammar"] = read_text(values["grammar_file"], "--grammar-file")
    if sampling.get("grammar"):
        try:  # checked now: a bad default grammar would otherwise refuse every request
            check_grammar(sampling["grammar"])
        except InvalidRequestError as exc:
            raise SettingsError(f"--grammar: {exc}") from None
    schema_text = values.get("json_schema")
    if "json_schema_file" in values:
        schema_text = read_text(values["json_schema_file"], "--json-schema-file")
    if schema_text is not None:
        try:
            sampling["json_schema"] = loads_bounded(schema_text, "--json-schema")
            schema_to_grammar(sampling["json_schema"])
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--json-schema: not valid JSON ({exc.msg} at char {exc.pos})") from None
        except (InvalidRequestError, ApiError) as exc:
            raise SettingsError(f"--json-schema: {exc}") from None
    return sampling


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """llama-server reads `--backend_sampling` as `--backend-sampling`: underscores in a long
    flag's name are dashes (its value, after `=`, is left alone)."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Settings from the command line over the environment; SystemExit(2) on a bad flag."""
    parser = build_parser()
    extra = shlex.split(env.get("PYLLAMA_SERVER_ARGS", ""))
    try:
        values = env_values(dict(env))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    args = normalize_argv([*extra, *argv])
    known, unknown = parser.parse_known_args(args)
    values.update(vars(known))
    if unknown:
        # llama-server refuses a flag it does not know; here it is a warning, so scripts
        # written for a newer llama-server (or for its GPU builds) still start.
        log.warning("ignoring unknown arguments: %s", " ".join(shlex.quote(u) for u in unknown))

    for flag in FLAGS:
        if flag.refused and values.get(flag.dest):
            raise SettingsError(f"{display_name(flag)}: {flag.refused}")
    ignored = [display_name(f) for f in FLAGS if f.ignored and f.dest in values]

    chat_template = values.get("chat_template")
    if "chat_template_file" in values:
        chat_template = read_text(values["chat_template_file"], "--chat-template-file")
    values["chat_template"] = chat_template

    settings = Settings(models=[], ignored_flags=ignored)
    kv_overrides(values.get("override_kv"))  # bad syntax exits 1 in every mode (a preset's own fails its model)
    if values.get("hf_file") and not values.get("hf_repo"):
        raise SettingsError("--hf-file names a file of the -hf repository: give -hf too (pyllama never downloads; "
                            "pass -m FILE for a local file)")
    if values.get("hf_repo") and "model" not in values and "config_file" not in values:
        _from_hf_cache(values)
    if "config_file" in values:
        data = load_config(values["config_file"])
        settings.models = config_models(data, values, values["config_file"])
        settings.multi_model = True
        values.setdefault("host", data.get("host", settings.host))
        values.setdefault("port", data.get("port", settings.port))
        if data.get("api_key"):
            values.setdefault("api_key", [str(data["api_key"])])
    elif "model" not in values and (values.get("models_dir") or values.get("models_preset") or cached_models()):
        from asgi.presets import router_specs

        settings.models = router_specs(values, chat_template)
        if not settings.models:
            raise SettingsError("router mode: no models found in --models-dir / --models-preset")
        settings.multi_model = settings.router = True
        settings.router_values = dict(values)
    else:
        model = values.get("model")
        if model is None:
            default = model_files.default_model_path()
            if default is None:
                raise SettingsError(model_files.HOW_TO_GET_DEFAULT)
            model_path = default
        else:
            model_path = Path(model)
        settings.models = [model_spec(model_path, values, chat_template)]
        if model is not None and not str(values.get("alias", "")).strip():
            settings.models[0].aliases = [str(model)]  # llama-server names an alias-less model by its path, as given

    adapters = lora_files(values, args)  # --lora / --lora-scaled: checked now, so a bad file exits 1
    check_lora_files(adapters, [m.path for m in settings.models if not m.unavailable])
    for spec in settings.models:
        spec.lora = list(adapters)
    cvec = control_vector_spec(values, args)  # --control-vector*: read now, so a bad file or value exits 1
    # the width against the model now; in router mode against each model as it loads (one of
    # another width fails its own load, as a llama-server child would)
    check_control_vectors(cvec, [] if settings.router else [m.path for m in settings.models if not m.unavailable])
    for spec in settings.models:
        spec.control_vector = cvec

    settings.host = str(values.get("host", settings.host))
    settings.hosts = [h.strip() for h in settings.host.split(",") if h.strip()] or ["127.0.0.1"]
    settings.host = settings.hosts[0]
    settings.port = int(values.get("port", settings.port))
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"--port must be between 0 and 65535 (got {settings.port})")
    if "path" in values:
        static = Path(values["path"])
        if not static.is_dir():
            raise SettingsError(f"--path {static}: not a folder")
        settings.static_path = static
    elif values.get("webui") is False:
        settings.static_path = None
    if "api_prefix" in values:
        from asgi.api_prefix import normalise

        settings.api_prefix = normalise(str(values["api_prefix"]))
    settings.api_keys = api_keys(values)
    for key in ("ssl_key_file", "ssl_cert_file"):
        if key in values:
            file = Path(values[key])
            if not file.is_file():
                raise SettingsError(f"--{key.replace('_', '-')} {file}: file not found")
            setattr(settings, key, file)
    if (settings.ssl_key_file is None) != (settings.ssl_cert_file is None):
        raise SettingsError("HTTPS needs both --ssl-key-file and --ssl-cert-file")
    for key in ("timeout", "metrics", "slots", "props", "cors_origins", "log_format", "verbose", "cache_prompt",
                "cont_batching", "slot_prompt_similarity", "models_max", "models_memory_mb", "ui_mcp_proxy",
                "models_autoload", "cache_ram", "cache_idle_slots"):
        if key in values:
            setattr(settings, key, values[key])
    if settings.models_max < 0:
        raise SettingsError(f"--models-max must be 0 (no limit) or more (got {settings.models_max})")
    if values.get("log_jsonl") and "log_format" not in values:
        settings.log_format = "json"
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"--log-format must be text or json (got {settings.log_format!r})")
    if "slot_save_path" in values:
        settings.slot_save_path = Path(values["slot_save_path"])
        try:
            settings.slot_save_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(f"--slot-save-path {settings.slot_save_path}: {exc.strerror or exc}") from None
        if not settings.slot_save_path.is_dir():
            raise SettingsError(f"--slot-save-path {settings.slot_save_path}: not a folder")
    if values.get("tools") and "cors_origins" not in values:
        settings.cors_origins = "localhost"  # llama-server: --tools limits CORS to local origins by default
    if "sleep_idle_seconds" in values:
        settings.sleep_idle_seconds = int(values["sleep_idle_seconds"])
        if settings.sleep_idle_seconds == 0 or settings.sleep_idle_seconds < -1:
            raise SettingsError("--sleep-idle-seconds: invalid value: cannot be 0 or less than -1")
    if any(ord(c) < 32 or ord(c) == 127 for c in str(settings.cors_origins)):
        raise SettingsError("--cors-origins must not contain control characters (CR, LF, ...)")
    if "system_prompt_file" in values:
        settings.system_prompt = _system_prompt(values["system_prompt_file"])
    settings.sampling = _sampling(values)
    _apply_limits(settings, values)
    settings.reasoning, settings.chat_template_kwargs = reasoning_flags(values)
    speed = speed_settings(values)
    if speed.n_threads is not None:
        settings.n_threads = speed.n_threads
    if speed.n_threads_batch is not None:
        settings.n_threads_batch = speed.n_threads_batch
    settings.speculative, settings.model_draft = speed.speculative, speed.model_draft
    return settings


# flag dest -> RequestLimits field
LIMIT_FLAGS = {
    "max_n_probs": "n_probs",
    "max_stop": "stop_count",
    "max_stop_length": "stop_length",
    "max_grammar_size": "grammar_bytes",
    "max_logit_bias": "logit_bias",
    "max_prompts": "prompts",
    "max_predict": "predict",
}


def _from_hf_cache(values: dict[str, Any]) -> None:
    """-hf/-hff: the cached file (or the repository's preset.ini) llama-server would use offline;
    the model is named by the -hf value unless --alias names it, as in llama-server."""
    try:
        kind, path = for_hf_flag(str(values["hf_repo"]), str(values.get("hf_file") or ""))
    except ValueError as exc:
        raise SettingsError(f"-hf {values['hf_repo']}: {exc}") from None
    if kind == "preset":
        log.warning("NOTE: using preset.ini from HF repo '%s'", values["hf_repo"])
        values["models_preset"] = str(path)
    else:
        values["model"] = str(path)
        if not str(values.get("alias", "")).strip():
            values["alias"] = str(values["hf_repo"])


def _apply_limits(settings: Settings, values: dict[str, Any]) -> None:
    changes: dict[str, int] = {}
    for dest, attr in LIMIT_FLAGS.items():
        if dest in values:
            value = int(values[dest])
            if value < 1 and dest != "max_n_probs":
                raise SettingsError(f"--{dest.replace('_', '-')} must be at least 1 (got {value})")
            if value < 0:
                raise SettingsError(f"--{dest.replace('_', '-')} must be at least 0 (got {value})")
            changes[attr] = value
    settings.limits = RequestLimits(**changes)
    if "max_body_size" in values:
        settings.max_body_size = int(values["max_body_size"])
        if settings.max_body_size < 1024:
            raise SettingsError(f"--max-body-size must be at least 1024 bytes (got {settings.max_body_size})")
    if "prep_process_bytes" in values:
        settings.prep_process_bytes = int(values["prep_process_bytes"])
        if settings.prep_process_bytes < 0:
            raise SettingsError(f"--prep-process-bytes must be 0 (off) or more (got {settings.prep_process_bytes})")
    if "max_queue" in values:
        settings.max_queue = int(values["max_queue"])
        if settings.max_queue < -1:
            raise SettingsError(f"--max-queue must be -1 (no limit) or more (got {settings.max_queue})")
    if "shutdown_timeout" in values:
        settings.shutdown_timeout = float(values["shutdown_timeout"])
        if not 0 <= settings.shutdown_timeout <= 3600:
            raise SettingsError(f"--shutdown-timeout must be between 0 and 3600 s (got {settings.shutdown_timeout})")
    if "stream_detach_timeout" in values:  # resumable streams (asgi/streams.py)
        settings.stream_detach_timeout = float(values["stream_detach_timeout"])
        if not 0.5 <= settings.stream_detach_timeout <= 86400:
            raise SettingsError("--stream-detach-timeout must be between 0.5 and 86400 s "
                                f"(got {settings.stream_detach_timeout:g})")
    if settings.timeout < 1:
        raise SettingsError(f"--timeout must be at least 1 second (got {settings.timeout})")


def _system_prompt(path: str) -> str:
    """-spf: a JSON file {"system_prompt": {"prompt": ...}} (the seeds' shape) or plain text."""
    text = read_text(path, "--system-prompt-file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict):
        inner = data.get("system_prompt", data)
        if isinstance(inner, dict) and isinstance(inner.get("prompt"), str):
            return str(inner["prompt"])
        if isinstance(inner, str):
            return inner
    raise SettingsError(f"--system-prompt-file {path}: expected {{\"system_prompt\": {{\"prompt\": ...}}}}")
