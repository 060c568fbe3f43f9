"""Control-vector GGUFs as llama.cpp's cvector-generator writes them (tools/cvector-generator/
cvector-generator.cpp export_gguf): `general.architecture` "controlvector",
`controlvector.model_hint`, `controlvector.layer_count`, and 1-D F32 tensors `direction.N`.

`parity_vector` is the deterministic vector of tests/golden/control_vector.json: the test
rebuilds it from the seed (no binary file in the repository) and checks its sha256 against
the one llama-server was given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter

PARITY_SEED = 20261207
PARITY_LAYERS = range(5, 21)  # direction.5 .. direction.20
PARITY_N_EMBD = 576  # SmolLM2-135M


def write_control_vector(path: Path, directions: Mapping[str, np.ndarray[Any, Any]], *, model_hint: str = "llama",
                         layer_count: int | None = None) -> Path:
    """A control-vector GGUF with these tensors (names and arrays written as given)."""
    w = GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", model_hint)
    w.add_int32("controlvector.layer_count", len(directions) if layer_count is None else layer_count)
    for name, arr in directions.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def parity_directions() -> dict[str, np.ndarray[Any, Any]]:
    """Seeded normal * 0.5, one row per layer of PARITY_LAYERS."""
    rng = np.random.default_rng(PARITY_SEED)
    data = (rng.standard_normal((len(PARITY_LAYERS), PARITY_N_EMBD)) * 0.5).astype(np.float32)
    return {f"direction.{il}": data[i] for i, il in enumerate(PARITY_LAYERS)}


def write_parity_vector(path: Path) -> str:
    """Write the parity vector file; returns its sha256."""
    write_control_vector(path, parity_directions())
    return hashlib.sha256(path.read_bytes()).hexdigest()
