"""The quant package and Linear under Pyodide (numpy 2.0.2, no BLAS) in Node.js."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.wasm.tools import build_dist, require_executable

pytestmark = pytest.mark.wasm
HERE = Path(__file__).resolve().parent


def test_dequantize_and_linear_under_pyodide(tmp_path: Path) -> None:
    dist = build_dist()
    node = require_executable("node")
    runner = tmp_path / "run.mjs"
    runner.write_text(
        f"""
import {{ readFileSync }} from "node:fs";
import {{ loadPyodide }} from {json.dumps((dist / "pyodide.mjs").as_uri())};
const py = await loadPyodide({{ indexURL: {json.dumps(str(dist) + "/")} }});
await py.loadPackage(["pyllama"], {{ messageCallback: () => {{}} }});
py.runPython(readFileSync({json.dumps(str(HERE / "pyodide_check.py"))}, "utf8"));
"""
    )
    res = subprocess.run([node, str(runner)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["platform"] == "emscripten" and out["numpy"] == "2.0.2"
    assert out["backend"] == "einsum"
    assert out["failures"] == []
