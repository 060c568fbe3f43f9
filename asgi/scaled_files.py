"""llama-server's `--X FNAME` / `--X-scaled FNAME:SCALE` flag pairs (LoRA adapters, control
vectors): both repeatable, each a comma-separated list (CSV with quotes, common/arg.cpp
parse_csv_row), together one list of (file, scale) in command-line order. argparse keeps
the two flags' values in two lists, so the order is read back from argv."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asgi.startup_checks import SettingsError


def _csv(value: str) -> list[str]:
    return next(csv.reader([value]), [""])


def scaled_files(values: dict[str, Any], argv: list[str], plain: str, scaled: str,
                 parse_scale: Callable[[str], float] = float) -> list[tuple[Path, float]]:
    """(path, scale) of every file given with `plain` (scale 1) or `scaled` (FNAME:SCALE),
    in command-line order; values from the environment or a preset (not in argv) come after.
    SettingsError (one line) for an item of `scaled` that is not FNAME:SCALE."""
    dests = (plain.lstrip("-").replace("-", "_"), scaled.lstrip("-").replace("-", "_"))
    given = [list(values.get(d) or []) for d in dests]
    order = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in (plain, scaled)]
    for flag, items in zip((plain, scaled), given, strict=True):
        order += [flag] * (len(items) - order.count(flag))
    iters = [iter(items) for items in given]
    out: list[tuple[Path, float]] = []
    name = scaled.lstrip("-")
    for flag in order[: sum(len(items) for items in given)]:
        if flag == plain:
            out += [(Path(item), 1.0) for item in _csv(str(next(iters[0])))]
            continue
        for item in _csv(str(next(iters[1]))):
            parts = item.split(":")
            if len(parts) != 2:
                raise SettingsError(f"{scaled} {item!r}: {name} format: FNAME:SCALE")
            try:
                scale = parse_scale(parts[1])
            except ValueError:
                raise SettingsError(f"{scaled} {item!r}: SCALE must be a number") from None
            out.append((Path(parts[0]), scale))
    return out
