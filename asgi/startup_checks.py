"""Start-up checks that turn a mistake into one line and exit status 1 (asgi.main prints it).

Kept apart from asgi.settings so that module stays about flag -> setting mapping: the
API key list (an empty one is refused, never silently "no authentication"), files read
at start, and whether the requested context can be allocated at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyllama.errors import PyllamaError
from pyllama.gguf_file import read_gguf
from pyllama.kv_override import KVOverride, apply_kv_overrides
from pyllama.memory import MIB, kv_cache_bytes


class SettingsError(ValueError):
    """A bad flag, variable or config file: printed as one line, exit status 1."""


def read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable as UTF-8 text"
        raise SettingsError(f"{what} {path}: {reason}") from None


def api_keys(values: dict[str, Any]) -> list[str]:
    """The keys from --api-key (comma-separated) and --api-key-file (one per line).

    A key option that yields no key at all is refused: serving without authentication
    because of an empty variable or file would be a silent hole, not a choice."""
    keys: list[str] = []
    if "api_key" in values:
        given = [k.strip() for item in values["api_key"] for k in str(item).split(",") if k.strip()]
        if not given:
            raise SettingsError("--api-key (or LLAMA_API_KEY) is empty: give at least one key, or leave it out")
        keys.extend(given)
    if "api_key_file" in values:
        text = read_text(values["api_key_file"], "--api-key-file")
        from_file = [line.strip() for line in text.splitlines() if line.strip()]
        if not from_file:
            raise SettingsError(f"--api-key-file {values['api_key_file']}: holds no key (one key per line)")
        keys.extend(from_file)
    return keys


def check_kv_fits(path: Path, n_ctx: int, n_parallel: int, cache_type_k: str, cache_type_v: str,
                  kv_unified: bool, numerics: str, kv_overrides: list[KVOverride] | None = None) -> None:
    """Refuse a context whose KV cache is larger than the machine's memory (-c 100000000):
    the load would fail after start-up, leaving a server that only answers 500. The GGUF
    header is read (memory-mapped, nothing allocated); a file too broken to read is left to
    the load, which reports it on /health."""
    try:
        gguf = read_gguf(path)
        apply_kv_overrides(gguf, kv_overrides or [], quiet=True)  # -c 0 takes an overridden context_length
        needed = kv_cache_bytes(gguf, n_ctx, n_parallel, cache_type_k, cache_type_v, kv_unified,
                                widen_f16=numerics == "fast")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (PyllamaError, OSError, ValueError, KeyError):
        return
    if needed > memory:
        raise SettingsError(
            f"--ctx-size {n_ctx}: the KV cache would need {needed // MIB} MiB, more than this machine's "
            f"{memory // MIB} MiB of memory (use a smaller -c)"
        )
