"""`pyllama run --control-vector*`: the steered greedy text of llama-server (the golden of
tests/parity/test_control_vector.py), and one-line errors for bad values."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import pyllama
from tests.parity.control_vector_file import write_parity_vector

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "control_vector.json").read_text())


def test_run_with_a_control_vector_gives_the_steered_text(smollm2_path: Path, tmp_path: Path) -> None:
    cv, first = GOLDEN["control_vector"], GOLDEN["completions"][0]
    vec = tmp_path / "v.gguf"
    assert write_parity_vector(vec) == cv["sha256"]
    args = ["run", "-m", str(smollm2_path), "-p", first["prompt"], "-n", str(len(first["tokens"])), "--temp", "0",
            "-c", "256", "--numerics", "exact"]
    out = pyllama(*args, "--control-vector-scaled", f"{vec}:{cv['scale']}",
                  "--control-vector-layer-range", *map(str, cv["layer_range"]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == first["content"].rstrip("\n")
    bad = pyllama(*args, "--control-vector", str(smollm2_path))
    assert bad.returncode == 1 and "direction tensor" in bad.stderr
    assert len([line for line in bad.stderr.splitlines() if "error" in line]) == 1, bad.stderr
    bad = pyllama(*args, "--control-vector-scaled", str(vec))
    assert bad.returncode == 2 and "FNAME:SCALE" in bad.stderr
    bad = pyllama(*args, "--control-vector", str(vec), "--control-vector-layer-range", "1", "x")
    assert bad.returncode == 2 and "must be integers" in bad.stderr
