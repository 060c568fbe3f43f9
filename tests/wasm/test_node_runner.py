"""wasm/build.py's offline Pyodide and wasm/run_node.mjs: the wheel installs and reads GGUF.

Checks the pieces under the parity test one by one, so a failure says which one broke:
the assembled lock lists exactly the files present with correct sha256; every engine
module (all of pyllama except the command line in pyllama.cli) imports under Pyodide (no threads, no `regex`, no C extensions); the GGUF read into
the wasm heap gives the same metadata as CPython's reader; a bad file is one clear line.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from pyllama.gguf_file import read_gguf
from tests.wasm.tools import REPO, build_dist, require_executable

pytestmark = pytest.mark.wasm


@pytest.fixture(scope="module")
def dist() -> Path:
    return build_dist()


def run_node(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    node = require_executable("node")
    return subprocess.run([node, *args], capture_output=True, text=True, timeout=timeout)


def test_lock_lists_exactly_the_files_present(dist: Path) -> None:
    lock = json.loads((dist / "pyodide-lock.json").read_text())
    assert lock["info"]["version"] == "0.27.7"
    names = set(lock["packages"])
    assert {"numpy", "gguf", "pyyaml", "jinja2", "markupsafe", "micropip", "pyllama"} <= names
    for name, ent in lock["packages"].items():
        path = dist / ent["file_name"]
        assert path.exists(), f"{name}: {path.name} missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ent["sha256"], name
        if name != "numpy":
            assert ent["file_name"].endswith("-py3-none-any.whl"), ent["file_name"]
    wheels = json.loads((dist / "wheels.json").read_text())
    assert wheels == {"gguf": lock["packages"]["gguf"]["file_name"], "pyllama": lock["packages"]["pyllama"]["file_name"]}


def test_every_module_imports_under_pyodide(dist: Path, tmp_path: Path) -> None:
    script = tmp_path / "imports.mjs"
    script.write_text(
        f"""
import {{ loadPyodide }} from {json.dumps((dist / "pyodide.mjs").as_uri())};
const py = await loadPyodide({{ indexURL: {json.dumps(str(dist) + "/")} }});
await py.loadPackage(["pyllama"], {{ messageCallback: () => {{}} }});
console.log(py.runPython(`
import importlib, json, pkgutil, sys, pyllama
failed, ok = [], []
for m in pkgutil.walk_packages(pyllama.__path__, "pyllama."):
    if m.name.startswith("pyllama.cli."):
        continue  # the command line (resource limits, argv) is CPython-only by nature
    try:
        importlib.import_module(m.name); ok.append(m.name)
    except Exception as e:
        failed.append(f"{{m.name}}: {{type(e).__name__}}: {{e}}")
json.dumps({{"platform": sys.platform, "ok": ok, "failed": failed, "regex": "regex" in sys.modules}})
`));
"""
    )
    res = run_node(str(script))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["platform"] == "emscripten"
    assert out["failed"] == []
    assert "pyllama.engine" in out["ok"] and "pyllama.scheduler" in out["ok"]
    assert not out["regex"]


def test_gguf_read_in_wasm_heap_matches_cpython(dist: Path, smollm2_path: Path) -> None:
    res = run_node(str(REPO / "wasm" / "run_node.mjs"), str(dist), str(smollm2_path), "--info", "-c", "256")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    info = out["info"]
    ref = read_gguf(smollm2_path)
    assert info["architecture"] == ref.metadata["general.architecture"] == "llama"
    assert info["n_tensors"] == len(ref.tensors)
    assert info["size"] == smollm2_path.stat().st_size
    assert info["n_vocab"] == len(ref.metadata["tokenizer.ggml.tokens"])
    assert info["n_layer"] == ref.metadata["llama.block_count"]
    assert info["weights"] == "packed"
    assert info["n_ctx"] == 256


def test_bad_model_file_is_one_clear_line(dist: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"NOTGGUF" + bytes(100))
    res = run_node(str(REPO / "wasm" / "run_node.mjs"), str(dist), str(bad), "--info")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-2000:]
    assert "broken.gguf: not a GGUF file" in lines[0]
    res = run_node(str(REPO / "wasm" / "run_node.mjs"), str(dist), str(tmp_path / "missing.gguf"))
    assert res.returncode == 2 and "no such file" in res.stderr
