"""llama-server's command-line flags, as one table: names, type, LLAMA_ARG_* variable, help.

A table (rather than a hundred `add_argument` calls) keeps the flag set easy to compare
with llama-server's `--help`, and lets the environment and the command line share one
parser: every variable is read first, the command line then overrides it, exactly as
llama.cpp's common_params_parse does. Flags that make sense only for a GPU or a C
build are accepted and ignored with a note, so existing scripts keep working; flags that
would download a model are refused, because pyllama never fetches from a model hub.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from asgi.control_vector_settings import CVEC_FLAGS, CVEC_METAVARS
from asgi.ignored_flags import IGNORED_FLAGS, REFUSED_FLAGS
from asgi.info_flags import EXIT_FLAGS, PrintAndExit, cache_list, completion_bash, list_devices
from asgi.lora_settings import LORA_FLAGS
from asgi.router_flags import ROUTER_FLAGS
from asgi.speed_flags import SPEED_FLAGS
from pyllama.sampling.fields import FIELDS, SEQ_FLAGS, SEQ_HELP

# kinds: str int float flag (store_true) noflag (store_false) list (repeatable str) toggle (--x/--no-x)
# str2 (two values, e.g. START END) exit (prints an answer and exits 0 as it is parsed: asgi/info_flags.py)
KINDS = ("str", "int", "float", "flag", "noflag", "list", "toggle", "str2", "exit")


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    dest: str
    kind: str
    help: str
    env: str | None = None
    metavar: str | None = None
    ignored: bool = False  # accepted for compatibility, has no effect here
    refused: str | None = None  # accepted by the parser, then refused with this reason


def display_name(flag: Flag) -> str:
    """The spelling warnings and errors name a flag by: its first long, positive name."""
    return next((n for n in flag.names if n.startswith("--") and not n.startswith("--no-")), flag.names[-1])


def _f(names: str, dest: str, kind: str, help: str, env: str | None = None, **kw: Any) -> Flag:
    return Flag(tuple(names.split()), dest, kind, help, env, **kw)


# pyllama.sampling.fields' table as server flags: each sets the default of the request
# field of the same name (asgi.settings reads them back by that name).
_SAMPLING_KIND = {"int": "int", "seed": "int", "float": "float", "bool": "flag", "samplers": "str",
                  "strings": "list", "logit_bias": "list"}
SAMPLING_FLAGS: list[Flag] = [
    *[Flag(f.flags, f.name, _SAMPLING_KIND[f.kind], f.flag_help, f.env,
           metavar="TOKEN_ID(+/-)BIAS" if f.kind == "logit_bias" else None) for f in FIELDS if f.flags],
    Flag(SEQ_FLAGS, "sampling_seq", "str", SEQ_HELP, metavar="SEQUENCE"),
]

NO_HUB = "pyllama never downloads models from a hub; download the GGUF yourself and pass -m FILE"

FLAGS: list[Flag] = [
    # model
    _f("-m --model", "model", "str", "model path (default: the packaged SmolLM2-135M-Instruct)", "LLAMA_ARG_MODEL", metavar="FNAME"),
    _f("-a --alias", "alias", "str", "model name in API responses (comma-separated aliases allowed)", "LLAMA_ARG_ALIAS"),
    _f("--tags", "tags", "str", "comma-separated model tags shown in /v1/models", "LLAMA_ARG_TAGS"),
    _f("-mu --model-url", "model_url", "str", "model download url (refused)", "LLAMA_ARG_MODEL_URL", refused=NO_HUB),
    _f("-hf -hfr --hf-repo", "hf_repo", "str", "<user>/<model>[:quant] already in llama-server's download cache "
       "(LLAMA_CACHE or the Hugging Face cache; pyllama never downloads); a repository with a preset.ini starts "
       "router mode on it", "LLAMA_ARG_HF_REPO"),
    _f("-hff --hf-file", "hf_file", "str", "the file of the -hf repository to serve (overrides its quant)",
       "LLAMA_ARG_HF_FILE"),
    _f("-hft --hf-token", "hf_token", "str", "no effect: pyllama never downloads, so it needs no token", "HF_TOKEN",
       ignored=True),
    _f("--weights", "weights", "str", "weight layout: auto, dense (float32, fastest) or packed (quantized, low memory)", "PYLLAMA_WEIGHTS"),
    _f("--numerics", "numerics", "str", "numerics: fast (default) or exact (bit-for-bit llama.cpp CPU arithmetic; several times slower generation, see docs/performance.md)", "PYLLAMA_NUMERICS"),
    _f("--config-file --config_file", "config_file", "str", "JSON/YAML file: host, port and a `models` list (multi-model)", "PYLLAMA_CONFIG_FILE"),
    _f("--models-memory-mb", "models_memory_mb", "int", "memory budget for loaded models in MiB (0 = no limit)", "PYLLAMA_MODELS_MEMORY_MB"),
    # context and batching
    _f("-c --ctx-size", "ctx_size", "int", "context size (default: 0 = from the model)", "LLAMA_ARG_CTX_SIZE"),
    _f("-n --predict --n-predict", "n_predict", "int", "tokens to predict (default: -1 = until EOS or context end)", "LLAMA_ARG_N_PREDICT"),
    _f("-b --batch-size", "batch_size", "int", "logical maximum batch size (default: 2048)", "LLAMA_ARG_BATCH"),
    _f("-ub --ubatch-size", "ubatch_size", "int", "physical maximum batch size (default: 512)", "LLAMA_ARG_UBATCH"),
    _f("--keep", "keep", "int", "tokens kept from the prompt when the context shifts (default: 0, -1 = all)"),
    _f("-np --parallel", "parallel", "int", "number of slots (default: 1)", "LLAMA_ARG_N_PARALLEL"),
    _f("-cb --cont-batching", "cont_batching", "toggle", "continuous batching (default: on)", "LLAMA_ARG_CONT_BATCHING"),
    _f("-nocb", "cont_batching", "noflag", "disable continuous batching"),
    _f("--context-shift", "context_shift", "toggle", "shift the context when it fills (default: on)", "LLAMA_ARG_CONTEXT_SHIFT"),
    _f("-kvu --kv-unified", "kv_unified", "toggle", "one KV buffer shared by all slots", "LLAMA_ARG_KV_UNIFIED"),
    _f("-no-kvu", "kv_unified", "noflag", "separate KV buffers (same as --no-kv-unified)"),
    _f("-sps --slot-prompt-similarity", "slot_prompt_similarity", "float", "prompt similarity needed to reuse a slot (default: 0.5)"),
    _f("--cache-prompt", "cache_prompt", "toggle", "reuse the cached prompt prefix (default: on)", "LLAMA_ARG_CACHE_PROMPT"),
    _f("-ctk --cache-type-k", "cache_type_k", "str", "KV cache type for K (default: f16)", "LLAMA_ARG_CACHE_TYPE_K"),
    _f("-ctv --cache-type-v", "cache_type_v", "str", "KV cache type for V (default: f16)", "LLAMA_ARG_CACHE_TYPE_V"),
    # sampling defaults (requests override them)
    *SAMPLING_FLAGS,
    _f("--grammar", "grammar", "str", "GBNF grammar constraining every generation"),
    _f("--grammar-file", "grammar_file", "str", "file to read the grammar from"),
    _f("-j --json-schema", "json_schema", "str", "JSON schema constraining every generation"),
    _f("-jf --json-schema-file", "json_schema_file", "str", "file to read the JSON schema from"),
    # rope / context hacking
    _f("--rope-scaling", "rope_scaling", "str", "RoPE scaling: none, linear or yarn", "LLAMA_ARG_ROPE_SCALING_TYPE"),
    _f("--rope-scale", "rope_scale", "float", "RoPE context scaling factor", "LLAMA_ARG_ROPE_SCALE"),
    _f("--rope-freq-base", "rope_freq_base", "float", "RoPE base frequency (default: from the model)", "LLAMA_ARG_ROPE_FREQ_BASE"),
    _f("--rope-freq-scale", "rope_freq_scale", "float", "RoPE frequency scale", "LLAMA_ARG_ROPE_FREQ_SCALE"),
    _f("--yarn-orig-ctx", "yarn_orig_ctx", "int", "YaRN original context", "LLAMA_ARG_YARN_ORIG_CTX"),
    _f("--yarn-ext-factor", "yarn_ext_factor", "float", "YaRN extrapolation mix factor", "LLAMA_ARG_YARN_EXT_FACTOR"),
    _f("--yarn-attn-factor", "yarn_attn_factor", "float", "YaRN attention factor", "LLAMA_ARG_YARN_ATTN_FACTOR"),
    _f("--yarn-beta-slow", "yarn_beta_slow", "float", "YaRN beta slow", "LLAMA_ARG_YARN_BETA_SLOW"),
    _f("--yarn-beta-fast", "yarn_beta_fast", "float", "YaRN beta fast", "LLAMA_ARG_YARN_BETA_FAST"),
    # embeddings
    _f("--embedding --embeddings", "embeddings", "flag", "enable the embedding endpoints", "LLAMA_ARG_EMBEDDINGS"),
    _f("--pooling", "pooling", "str", "embedding pooling: none, mean, cls, last, rank", "LLAMA_ARG_POOLING"),
    _f("--rerank --reranking", "reranking", "flag", "enable the reranking endpoints (embeddings with pooling rank)", "LLAMA_ARG_RERANKING"),
    # chat
    _f("--chat-template", "chat_template", "str", "Jinja chat template or built-in name (chatml, llama2, llama3, gemma, ...)", "LLAMA_ARG_CHAT_TEMPLATE"),
    _f("--chat-template-file", "chat_template_file", "str", "file holding a Jinja chat template", "LLAMA_ARG_CHAT_TEMPLATE_FILE"),
    _f("--jinja", "jinja", "toggle", "no effect: Jinja chat templates are always used", "LLAMA_ARG_JINJA", ignored=True),
    _f("-rea --reasoning", "reasoning", "str", "let the model think: on, off or auto (default: auto = when the template can)", "LLAMA_ARG_REASONING"),
    _f("--reasoning-format", "reasoning_format", "str", "where thoughts go: none (in content), deepseek (reasoning_content), deepseek-legacy (both), auto (default)", "LLAMA_ARG_THINK"),
    _f("--reasoning-budget", "reasoning_budget", "int", "thinking budget: -1 unrestricted (default), 0 no thinking, N > 0 thinking tokens before the end tag is forced", "LLAMA_ARG_THINK_BUDGET"),
    _f("--reasoning-budget-message", "reasoning_budget_message", "str", "message written before the end tag forced when the thinking budget is exhausted (default: none)", "LLAMA_ARG_THINK_BUDGET_MESSAGE"),
    _f("--chat-template-kwargs", "chat_template_kwargs", "str", "JSON object of extra chat template variables, e.g. '{\"enable_thinking\": false}'", "LLAMA_ARG_CHAT_TEMPLATE_KWARGS"),
    _f("-spf --system-prompt-file", "system_prompt_file", "str", "JSON file with a system prompt prepended to every prompt"),
    # server
    _f("--host", "host", "str", "address to listen on (default: 127.0.0.1)", "LLAMA_ARG_HOST"),
    _f("--port", "port", "int", "port to listen on (default: 8080)", "LLAMA_ARG_PORT"),
    _f("--path", "path", "str", "folder of static files served at / (default: the web UI)", "LLAMA_ARG_STATIC_PATH"),
    _f("--api-prefix", "api_prefix", "str", "prefix path every route is served under, e.g. /llm: /llm/v1/chat/completions, the web UI at /llm/ (default: none)", "LLAMA_ARG_API_PREFIX"),
    _f("--ui --webui", "webui", "toggle", "serve the web UI (default: on)", "LLAMA_ARG_UI"),
    _f("--api-key", "api_key", "list", "API key required as `Authorization: Bearer KEY` (repeatable, or comma-separated)", "LLAMA_API_KEY"),
    _f("--api-key-file", "api_key_file", "str", "file with one API key per line", "LLAMA_ARG_API_KEY_FILE"),
    _f("--ssl-key-file", "ssl_key_file", "str", "PEM private key for HTTPS", "LLAMA_ARG_SSL_KEY_FILE"),
    _f("--ssl-cert-file", "ssl_cert_file", "str", "PEM certificate for HTTPS", "LLAMA_ARG_SSL_CERT_FILE"),
    _f("-to --timeout", "timeout", "int", "read/write timeout in seconds (default: 600)", "LLAMA_ARG_TIMEOUT"),
    _f("--max-body-size", "max_body_size", "int", "largest request body in bytes; larger ones get 413 (default: 67108864)", "PYLLAMA_MAX_BODY_SIZE"),
    _f("--prep-process-bytes", "prep_process_bytes", "int", "request bodies of at least this many bytes are parsed, templated and tokenized in a separate process, off the model's GIL (default: 1048576; 0 = never)", "PYLLAMA_PREP_PROCESS_BYTES"),
    _f("--max-queue", "max_queue", "int", "tasks that may wait for a free slot before requests get 503 + Retry-After (default: max(64, 4 x --parallel); -1 = no limit)", "PYLLAMA_MAX_QUEUE"),
    _f("--max-prompts", "max_prompts", "int", "prompts or embedding inputs per request (default: 1024)", "PYLLAMA_MAX_PROMPTS"),
    _f("--max-predict", "max_predict", "int", "tokens one completion may generate, whatever its n_predict (bounds n_predict -1 with ignore_eos or context shift; default: 16384)", "PYLLAMA_MAX_PREDICT"),
    _f("--max-n-probs", "max_n_probs", "int", "largest n_probs / top_logprobs a request may ask for (default: 100)", "PYLLAMA_MAX_N_PROBS"),
    _f("--max-stop", "max_stop", "int", "stop strings per request (default: 64)", "PYLLAMA_MAX_STOP"),
    _f("--max-stop-length", "max_stop_length", "int", "characters per stop string (default: 1024)", "PYLLAMA_MAX_STOP_LENGTH"),
    _f("--max-grammar-size", "max_grammar_size", "int", "bytes of a request's grammar or JSON schema (default: 262144)", "PYLLAMA_MAX_GRAMMAR_SIZE"),
    _f("--max-logit-bias", "max_logit_bias", "int", "logit_bias entries per request (default: 4096)", "PYLLAMA_MAX_LOGIT_BIAS"),
    _f("--shutdown-timeout", "shutdown_timeout", "float", "seconds in-flight requests may keep running after SIGINT/SIGTERM before they are cancelled (default: 10)", "PYLLAMA_SHUTDOWN_TIMEOUT"),
    _f("--metrics", "metrics", "flag", "enable the Prometheus /metrics endpoint", "LLAMA_ARG_ENDPOINT_METRICS"),
    _f("--slots", "slots", "toggle", "enable the /slots endpoint (default: on)", "LLAMA_ARG_ENDPOINT_SLOTS"),
    _f("--slots-endpoint-disable", "slots", "noflag", "disable the /slots endpoint (old spelling of --no-slots)"),
    _f("--props", "props", "flag", "allow POST /props to change global properties", "LLAMA_ARG_ENDPOINT_PROPS"),
    _f("--slot-save-path", "slot_save_path", "str", "folder for slot save/restore files (enables POST /slots)"),
    _f("--cors-origins", "cors_origins", "str", "allowed CORS origins (default: *; 'localhost' reflects local origins)", "LLAMA_ARG_CORS_ORIGINS"),
    _f("--log-format", "log_format", "str", "log format: text or json (default: text)"),
    _f("--log-jsonl", "log_jsonl", "toggle", "log JSON lines (llama-server's spelling of --log-format json)",
       "LLAMA_ARG_LOG_JSONL"),
    _f("-v --verbose --log-verbose", "verbose", "flag", "verbose logging (requests and responses)"),
    _f("-lv --verbosity --log-verbosity", "verbosity", "int", "log verbosity level", "LLAMA_ARG_LOG_VERBOSITY"),
    _f("--log-disable", "log_disable", "flag", "disable logging"),
    # router mode (asgi/router_flags.py)
    *[_f(*row) for row in ROUTER_FLAGS],
    # threads and speculative decoding (issue 18; asgi/speed_flags.py)
    *[_f(*row) for row in SPEED_FLAGS],
    # LoRA adapters (issue 16; asgi/lora_settings.py)
    *[_f(*row, metavar={"lora": "FNAME", "lora_scaled": "FNAME:SCALE"}.get(row[1])) for row in LORA_FLAGS],
    # control vectors (asgi/control_vector_settings.py)
    *[_f(*row, metavar=CVEC_METAVARS.get(row[1])) for row in CVEC_FLAGS],
    _f("--override-kv", "override_kv", "list", "advanced option to override model metadata by key (repeatable, or "
       "comma-separated KEY=TYPE:VALUE; types: int, float, bool, str); the draft model (-md) gets them too. "
       "example: --override-kv tokenizer.ggml.add_bos_token=bool:false,tokenizer.ggml.add_eos_token=bool:false",
       metavar="KEY=TYPE:VALUE,..."),
    _f("--sleep-idle-seconds", "sleep_idle_seconds", "int", "seconds of idleness after which the model is unloaded until the next request (default: -1 = never)", "LLAMA_ARG_SLEEP_IDLE_SECONDS"),
    _f("--ui-mcp-proxy --webui-mcp-proxy", "ui_mcp_proxy", "toggle", "serve the /cors-proxy route the web UI's MCP client uses (default: off; do not enable in untrusted environments)", "LLAMA_ARG_UI_MCP_PROXY"),
    _f("--media-path", "media_path", "str", "folder local file:// media may be read from (no multimodal models here: accepted, unused)", "LLAMA_ARG_MEDIA_PATH"),
    # the host-memory prompt cache (pyllama.prompt_cache)
    _f("-cram --cache-ram", "cache_ram", "int", "set the maximum cache size in MiB (default: 8192, -1 - no limit, 0 - disable)", "LLAMA_ARG_CACHE_RAM"),
    _f("--cache-idle-slots", "cache_idle_slots", "toggle", "save idle slots to the prompt cache on new task, and clear them when using unified KV (default: enabled, requires cache-ram)", "LLAMA_ARG_CACHE_IDLE_SLOTS"),
    # resumable streams (issue 16; asgi/streams.py)
    _f("--stream-detach-timeout", "stream_detach_timeout", "float", "seconds a resumable stream (X-Conversation-Id) may run with no client reading it before it is cancelled (default: 300)", "PYLLAMA_STREAM_DETACH_TIMEOUT"),
    # accepted and ignored: GPU and C-build knobs, and llama-server features that have no counterpart here
    _f("--swa-full", "swa_full", "flag", "no effect: the KV cache is always full size", "LLAMA_ARG_SWA_FULL", ignored=True),
    _f("--offline", "offline", "flag", "no effect: pyllama never downloads", "LLAMA_ARG_OFFLINE", ignored=True),
    _f("-bs --backend-sampling", "backend_sampling", "flag", "no effect: NumPy samples on the CPU", "LLAMA_ARG_BACKEND_SAMPLING",
       ignored=True),
    _f("--tools", "tools", "str", "no effect: no built-in agent tools here (as in llama-server, --cors-origins defaults to localhost with it)", "LLAMA_ARG_TOOLS", ignored=True),
    _f("--threads-http", "threads_http", "int", "no effect: one event loop serves HTTP", "LLAMA_ARG_THREADS_HTTP", ignored=True),
    _f("-ngl --gpu-layers --n-gpu-layers", "n_gpu_layers", "str", "no effect: pyllama runs on the CPU with NumPy (no GPU, device or offload)", "LLAMA_ARG_N_GPU_LAYERS", ignored=True),
    _f("-fa --flash-attn", "flash_attn", "str", "no effect: pyllama runs on the CPU with NumPy (no GPU, device or offload)", "LLAMA_ARG_FLASH_ATTN", ignored=True),
    _f("--mlock", "mlock", "flag", "no effect: pyllama's GGUF loader has one mode (NumPy memory map); older llama-server spelling", ignored=True),
    _f("--no-mmap", "no_mmap", "flag", "no effect: pyllama's GGUF loader has one mode (NumPy memory map); older llama-server spelling", ignored=True),
    _f("--numa", "numa", "str", "no effect: no NUMA placement (thread placement is left to the OS and the BLAS)", "LLAMA_ARG_NUMA", ignored=True),
    _f("-dt --defrag-thold", "defrag_thold", "float", "no effect: deprecated in llama.cpp; pyllama's KV cache needs no defragmentation", "LLAMA_ARG_DEFRAG_THOLD", ignored=True),
    _f("--warmup --no-warmup", "warmup", "flag", "no effect: the model is not warmed up with an empty run", ignored=True),
    # flags that print an answer and exit (asgi/info_flags.py)
    *[_f(*row) for row in EXIT_FLAGS],
    # llama-server flags with no counterpart here (asgi/ignored_flags.py)
    *[_f(*row, ignored=True) for row in IGNORED_FLAGS],
    *[_f(*row, refused=row[3]) for row in REFUSED_FLAGS],
]

TRUE_WORDS = {"1", "true", "on", "yes", "enabled"}
FALSE_WORDS = {"0", "false", "off", "no", "disabled"}


def env_bool(value: str, name: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name}={value!r}: expected true/false, 1/0, on/off")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake prints one line and exits 2 (no usage dump)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(prog: str = "pyllama-server") -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        allow_abbrev=False,
        add_help=False,
        description="llama-server compatible HTTP server on pyllama (Quart + Hypercorn).",
        epilog="Every flag with a LLAMA_ARG_* variable can also be set through the environment.",
    )
    parser.add_argument("-h", "--help", "--usage", action="help", help="show this help message and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="show the version and exit")
    for flag in FLAGS:
        note = " [ignored]" if flag.ignored else " [refused]" if flag.refused else ""
        env = f" (env: {flag.env})" if flag.env else ""
        help_text = flag.help + note + env
        common: dict[str, Any] = {"dest": flag.dest, "help": help_text, "default": argparse.SUPPRESS}
        if flag.kind == "exit":
            parser.add_argument(*flag.names, action=PrintAndExit, text=_EXIT_TEXTS[flag.dest], **common)
        elif flag.kind == "flag":
            parser.add_argument(*flag.names, action="store_true", **common)
        elif flag.kind == "noflag":
            parser.add_argument(*flag.names, action="store_false", **common)
        elif flag.kind == "toggle":
            # BooleanOptionalAction adds the --no-X spelling of every --X name itself
            parser.add_argument(*flag.names, action=argparse.BooleanOptionalAction, **common)
        elif flag.kind == "str2":
            parser.add_argument(*flag.names, nargs=2, metavar=("START", "END"), **common)
        elif flag.kind == "list":
            parser.add_argument(*flag.names, action="append", metavar=flag.metavar or "VALUE", **common)
        else:
            kind = {"str": str, "int": int, "float": float}[flag.kind]
            parser.add_argument(*flag.names, type=kind, metavar=flag.metavar or "N" if flag.kind != "str" else flag.metavar or "VALUE", **common)
    return parser


def _completion_names() -> list[str]:
    names = ["-h", "--help", "--usage", "--version"]
    for flag in FLAGS:
        names += flag.names
        if flag.kind == "toggle":
            names += [n.replace("--", "--no-", 1) for n in flag.names if n.startswith("--")]
    return names


_EXIT_TEXTS = {"list_devices": list_devices, "cache_list": cache_list,
               "completion_bash": lambda: completion_bash(_completion_names())}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pyllama {version('pyllama')}"
    except PackageNotFoundError:
        return "pyllama (not installed)"


def ignored_note(name: str) -> str:
    """The warning line for an ignored flag given on the command line or in the environment."""
    reason = next((f.help for f in FLAGS if f.ignored and name in f.names), "")
    return f"note: {name} has no effect in pyllama (accepted for llama-server compatibility): " + \
        reason.removeprefix("no effect: ")


def env_values(env: dict[str, str]) -> dict[str, Any]:
    """Flag values from LLAMA_ARG_* variables (converted like their flags)."""
    values: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.env is None or flag.env not in env or env[flag.env] == "":
            continue
        raw = env[flag.env]
        try:
            if flag.kind in ("flag", "toggle"):
                values[flag.dest] = env_bool(raw, flag.env)
            elif flag.kind == "noflag":
                # LLAMA_ARG_UI=false means "no web UI": the variable names the positive setting.
                values[flag.dest] = env_bool(raw, flag.env)
            elif flag.kind == "list":
                values[flag.dest] = [raw]
            else:
                values[flag.dest] = scalar_value(flag.kind, raw)
        except ValueError as exc:
            raise ValueError(f"{flag.env}={raw!r}: {exc}") from None
    return values


def scalar_value(kind: str, raw: str) -> int | float | str:
    """A flag's value from text (a variable or a preset line) by its kind: int, float or
    text; ValueError when the text is not that kind."""
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def flag_for(dest: str) -> Flag:
    return next(f for f in FLAGS if f.dest == dest)
