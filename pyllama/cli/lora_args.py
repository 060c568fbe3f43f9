"""`--lora` / `--lora-scaled` for `pyllama run`, with llama.cpp's syntax (common/arg.cpp).

`--lora FNAME` (scale 1) and `--lora-scaled FNAME:SCALE`, repeatable, each a comma-separated
list (CSV quoting for names with commas); the adapters keep their command-line order.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyllama.cli.common import CliError
from pyllama.cli.scaled_files import scaled_files_action
from pyllama.engine import Model
from pyllama.errors import ModelLoadError

_LoraAction = scaled_files_action("--lora")


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
