"""`--lora` / `--lora-scaled` for `pyllama run`, with llama.cpp's syntax (common/arg.cpp).

`--lora FNAME` (scale 1) and `--lora-scaled FNAME:SCALE`, repeatable, each a comma-separated
list (CSV quoting for names with commas); the adapters keep their command-line order.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from typing import Any

from pyllama.cli.common import CliError
from pyllama.engine import Model
from pyllama.errors import ModelLoadError


class _LoraAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items: list[tuple[str, float]] = list(getattr(namespace, self.dest, None) or [])
        for item in next(csv.reader([str(values)]), []):
            if option_string == "--lora":
                items.append((item, 1.0))
                continue
            parts = item.split(":")
            try:
                if len(parts) != 2:
                    raise ValueError
                items.append((parts[0], float(parts[1])))
            except ValueError:
                parser.error(f"--lora-scaled {item!r}: lora-scaled format: FNAME:SCALE")
        setattr(namespace, self.dest, items)


def add_lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", dest="lora", action=_LoraAction, metavar="FNAME", default=[],
                   help="path to LoRA adapter (use comma-separated values to load multiple adapters)")
    p.add_argument("--lora-scaled", dest="lora", action=_LoraAction, metavar="FNAME:SCALE",
                   help="path to LoRA adapter with user defined scaling (format: FNAME:SCALE,...)")


def apply_lora_args(model: Model, adapters: Sequence[tuple[str, float]]) -> None:
    """Load the adapters onto `model` (CliError, one line, for a bad file)."""
    if not adapters:
        return
    from pyllama.lora import LoraAdapter, attach_adapters

    try:
        attach_adapters(model, [LoraAdapter.read(path) for path, _ in adapters], [s for _, s in adapters])
    except ModelLoadError as exc:
        raise CliError(f"failed to apply lora adapter: {exc}") from None
