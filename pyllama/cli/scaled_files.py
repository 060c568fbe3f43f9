"""`--X FNAME` / `--X-scaled FNAME:SCALE` argument pairs (LoRA adapters, control vectors), with
llama.cpp's syntax (common/arg.cpp): each a comma-separated list (CSV quoting for names with
commas), repeatable, both flags filling one list of (file, scale) in command-line order."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from typing import Any


def scaled_files_action(plain: str, parse_scale: Callable[[str], float] = float) -> type[argparse.Action]:
    """An argparse action for the pair: `plain` items get scale 1; the other flag's items must
    be exactly FNAME:SCALE (else one argparse error line, as llama.cpp's "X-scaled format")."""

    class ScaledFiles(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            items: list[tuple[str, float]] = list(getattr(namespace, self.dest, None) or [])
            for item in next(csv.reader([str(values)]), []):
                if option_string == plain:
                    items.append((item, 1.0))
                    continue
                parts = item.split(":")
                try:
                    if len(parts) != 2:
                        raise ValueError
                    items.append((parts[0], parse_scale(parts[1])))
                except ValueError:
                    name = (option_string or plain).lstrip("-")
                    parser.error(f"--{name} {item!r}: {name} format: FNAME:SCALE")
            setattr(namespace, self.dest, items)

    return ScaledFiles
