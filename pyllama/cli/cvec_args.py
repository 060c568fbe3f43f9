"""`--control-vector`, `--control-vector-scaled`, `--control-vector-layer-range` for `pyllama run`,
with llama-cli's syntax (common/arg.cpp); the vectors are pyllama/control_vector.py.

`--control-vector FNAME` (scale 1) and `--control-vector-scaled FNAME:SCALE`, repeatable, each
a comma-separated list (CSV quoting for names with commas); the files are summed in their
command-line order. The range is START END, inclusive (<= 0: the first / last layer).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pyllama.cli.common import CliError
from pyllama.cli.scaled_files import scaled_files_action
from pyllama.control_vector import apply_control_vector, load_control_vectors, parse_float, parse_int
from pyllama.engine import Model
from pyllama.errors import ModelLoadError

_CvecAction = scaled_files_action("--control-vector", parse_float)


class _RangeAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, tuple(parse_int(str(v)) for v in values))
        except ValueError:
            parser.error(f"--control-vector-layer-range {' '.join(map(str, values))}: START and END must be integers")


def add_cvec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control-vector", dest="control_vector", action=_CvecAction, metavar="FNAME", default=[],
                   help="add a control vector (use comma-separated values to add multiple control vectors)")
    p.add_argument("--control-vector-scaled", dest="control_vector", action=_CvecAction, metavar="FNAME:SCALE",
                   help="add a control vector with user defined scaling SCALE (format: FNAME:SCALE,...)")
    p.add_argument("--control-vector-layer-range", dest="control_vector_layer_range", action=_RangeAction,
                   nargs=2, metavar=("START", "END"), default=(-1, -1),
                   help="layer range to apply the control vector(s) to, start and end inclusive")


def apply_cvec_args(model: Model, files: Sequence[tuple[str, float]], layer_range: tuple[int, int]) -> None:
    """Set the vectors on `model` (CliError, one line, for a bad file or width)."""
    if not files:
        return
    try:
        apply_control_vector(model.net, load_control_vectors(files), *layer_range)
    except ModelLoadError as exc:
        raise CliError(f"failed to load control vector: {exc}") from None
