"""llama-server's router-mode flags, as rows of asgi.flags' table (kept apart from it so the
two grow without touching each other; each row is (names, dest, kind, help[, env]) as
`asgi.flags._f` takes them). Names, variables and defaults follow llama.cpp's
common/arg.cpp: --models-max 4 (0 = no limit), --models-autoload on.
"""

from __future__ import annotations

ROUTER_FLAGS: list[tuple[str, ...]] = [
    ("--models-dir", "models_dir", "str",
     "folder of GGUF files served in router mode, one model per file or per sub-folder (default: disabled)",
     "LLAMA_ARG_MODELS_DIR"),
    ("--models-preset", "models_preset", "str",
     "INI file of model presets served in router mode, llama-server's format (default: disabled)",
     "LLAMA_ARG_MODELS_PRESET"),
    ("--models-max", "models_max", "int",
     "router mode and --config-file: most models loaded at once, the least recently used idle one is "
     "unloaded first (default: 4, 0 = unlimited)", "LLAMA_ARG_MODELS_MAX"),
    ("--models-autoload", "models_autoload", "toggle",
     "router mode: load a model when a request names it (default: on; ?autoload=false per request)",
     "LLAMA_ARG_MODELS_AUTOLOAD"),
]
