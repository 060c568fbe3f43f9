"""llama-server's control-vector flags (the vectors themselves are pyllama/control_vector.py).

- `--control-vector FNAME` (scale 1) and `--control-vector-scaled FNAME:SCALE`, both repeatable
  and taking comma-separated lists (CSV with quotes, common/arg.cpp parse_csv_row); the files
  are summed in command-line order.
- `--control-vector-layer-range START END`: inclusive; START <= 0 means 1, END <= 0 the
  model's n_layer (common_init_from_params). No LLAMA_ARG_ variables, as in llama-server.

Everything is checked at start-up (files read, widths against every model), so a bad file
or value exits 1 with one line instead of failing the model's load later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgi.scaled_files import scaled_files
from asgi.startup_checks import SettingsError
from pyllama.errors import ModelLoadError

CVEC_FLAGS: list[tuple[str, ...]] = [
    ("--control-vector", "control_vector", "list",
     "add a control vector (use comma-separated values to add multiple control vectors)"),
    ("--control-vector-scaled", "control_vector_scaled", "list",
     "add a control vector with user defined scaling SCALE (format: FNAME:SCALE,...; comma-separated values allowed)"),
    ("--control-vector-layer-range", "control_vector_layer_range", "str2",
     "layer range to apply the control vector(s) to, start and end inclusive"),
]
CVEC_METAVARS = {"control_vector": "FNAME", "control_vector_scaled": "FNAME:SCALE,..."}


@dataclass
class ControlVectorSpec:
    """What a model applies after its load: (path, scale) of every file, and the layer range."""

    files: list[tuple[Path, float]] = field(default_factory=list)
    start: int = -1
    end: int = -1


def control_vector_spec(values: dict[str, Any], argv: list[str]) -> ControlVectorSpec:
    """The files in command-line order (argparse keeps the two flags apart: argv gives the order)."""
    from pyllama.control_vector import parse_float, parse_int

    spec = ControlVectorSpec(scaled_files(values, argv, "--control-vector", "--control-vector-scaled", parse_float))
    layer_range = values.get("control_vector_layer_range")
    if layer_range is not None:
        try:
            spec.start, spec.end = (parse_int(str(v)) for v in layer_range)
        except ValueError:
            raise SettingsError(f"--control-vector-layer-range {' '.join(map(str, layer_range))}: "
                                "START and END must be integers") from None
    return spec


def check_control_vectors(spec: ControlVectorSpec, model_paths: list[Path]) -> None:
    """Start-up: the files are valid control vectors as wide as every model they apply to."""
    if not spec.files:
        return
    from pyllama.control_vector import load_control_vectors
    from pyllama.gguf_file import read_gguf

    try:
        cvec = load_control_vectors([(str(p), s) for p, s in spec.files])
    except ModelLoadError as exc:
        raise SettingsError(f"failed to load control vector: {exc}") from None
    for model in model_paths:
        try:
            gguf = read_gguf(model)
        except (ModelLoadError, OSError):
            continue  # the model's own load reports a broken model file
        n_embd = gguf.get(f"{gguf.get('general.architecture', '')}.embedding_length")
        if isinstance(n_embd, int) and n_embd != cvec.n_embd:
            raise SettingsError(f"failed to apply control vector: its n_embd ({cvec.n_embd}) "
                                f"does not match the model's ({n_embd}, {model})")
