"""llama-server's LoRA flags and request fields (the adapters themselves are pyllama/lora.py).

- `--lora FNAME` (scale 1) and `--lora-scaled FNAME:SCALE`, both repeatable and taking
  comma-separated lists (CSV with quotes, common/arg.cpp parse_csv_row); adapter ids are
  their order on the command line. `--lora-init-without-apply` loads them with scale 0
  until POST /lora-adapters sets one (the server README's reading of the flag).
- The per-request `lora` field and POST /lora-adapters both take [{"id", "scale"}]; the
  adapters a list leaves out get scale 0 (construct_lora_list). Unknown ids and wrong types
  are refused with 400 (llama-server 0.3.36 silently skips an unknown id; older servers refused
  it with "invalid adapter id", and a client that names an adapter the server does not have
  should hear about it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from asgi.errors import BadRequest
from asgi.scaled_files import scaled_files
from asgi.startup_checks import SettingsError
from pyllama.errors import ModelLoadError

LORA_FLAGS: list[tuple[str, ...]] = [
    ("--lora", "lora", "list",
     "path to LoRA adapter (use comma-separated values to load multiple adapters)"),
    ("--lora-scaled", "lora_scaled", "list",
     "path to LoRA adapter with user defined scaling (format: FNAME:SCALE,...; comma-separated values allowed)"),
    ("--lora-init-without-apply", "lora_init_without_apply", "flag",
     "load LoRA adapters without applying them (apply later via POST /lora-adapters) (default: disabled)"),
]


def lora_files(values: dict[str, Any], argv: list[str]) -> list[tuple[Path, float]]:
    """(path, scale) of every adapter, in command-line order (their ids)."""
    out = scaled_files(values, argv, "--lora", "--lora-scaled")
    if values.get("lora_init_without_apply"):
        out = [(p, 0.0) for p, _ in out]
    return out


def check_lora_files(files: list[tuple[Path, float]], model_paths: list[Path]) -> None:
    """Start-up: every adapter is a readable LoRA for every model it will be attached to."""
    from pyllama.lora import check_adapter_file

    for path, _ in files:
        if not path.is_file():
            raise SettingsError(f"failed to load lora adapter '{path}': file not found")
        for model in model_paths:
            try:
                check_adapter_file(path, model)
            except ModelLoadError as exc:
                raise SettingsError(f"failed to apply lora adapter: {exc}") from None


def lora_entries(value: Any, what: str) -> list[tuple[int, float]]:
    """[{"id": int, "scale": number}, ...] -> (id, scale) pairs; 400 on anything else."""
    if not isinstance(value, list):
        raise BadRequest(f"{what}: must be an array of objects with 'id' and 'scale' fields")
    out: list[tuple[int, float]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise BadRequest(f"{what}: each entry must be an object with 'id' and 'scale' fields")
        i, scale = entry.get("id"), entry.get("scale", 0.0)
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise BadRequest(f"{what}: 'id' must be a non-negative integer (the adapter's id in GET /lora-adapters)")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not math.isfinite(scale):
            raise BadRequest(f"{what}: 'scale' must be a finite number")
        out.append((i, float(scale)))
    return out


def lora_scales(entries: list[tuple[int, float]], n_adapters: int) -> tuple[float, ...]:
    """One scale per adapter: the listed ones, 0 for the others (construct_lora_list)."""
    scales = [0.0] * n_adapters
    for i, scale in entries:
        if i >= n_adapters:
            raise BadRequest(f"invalid adapter id {i}: the server has {n_adapters} LoRA adapter(s)")
        scales[i] = scale
    return tuple(scales)
