"""The engine under Pyodide (Node.js) produces exactly CPython's greedy tokens on SmolLM2.

Pyodide's NumPy has no BLAS and runs in wasm32, so a different summation order could flip
an argmax; this test pins that the unchanged wheel computes the same thing. The Pyodide
side goes through wasm/run_node.mjs and web/pyllama_session.py (the browser worker's
code path: bytes read into one wasm-heap buffer, Model.from_buffer, the Scheduler); the
CPython side uses the engine's own public API (Model.load + Model.generate). Both use
packed weights, and the tokens/second of each are printed and saved to
test-artifacts/wasm_parity.json.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.wasm.tools import ARTIFACTS, REPO, build_dist, require_executable

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
]
N_PREDICT = 16
N_CTX = 512

pytestmark = [pytest.mark.wasm, pytest.mark.slow]


def cpython_greedy(model_path: Path) -> tuple[list[list[int]], list[list[int]], float]:
    from pyllama.engine import Model
    from pyllama.sampling import Sampler, SamplingParams

    model = Model.load(model_path, weights="packed", n_ctx=N_CTX, numerics="exact")
    tok = model.tokenizer
    prompts: list[list[int]] = []
    outputs: list[list[int]] = []
    decode_s = 0.0
    decode_n = 0
    for text in PROMPTS:
        ids = list(tok.tokenize(text, add_special=True, parse_special=True))
        sampler = Sampler(SamplingParams(temperature=0.0, seed=42), model.n_vocab, eog_ids=tok.eog_ids, n_ctx=N_CTX)
        out: list[int] = []
        t_first = 0.0
        for token in model.generate(ids, sampler, N_PREDICT, ignore_eos=True):
            out.append(token)
            if len(out) == 1:
                t_first = time.perf_counter()
        decode_s += time.perf_counter() - t_first
        decode_n += len(out) - 1  # tokens after the first come from single-token decode steps
        prompts.append(ids)
        outputs.append(out)
    return prompts, outputs, decode_n / decode_s


def pyodide_greedy(dist: Path, model_path: Path) -> dict[str, Any]:
    node = require_executable("node")
    cmd = [node, str(REPO / "wasm" / "run_node.mjs"), str(dist), str(model_path), "--json", "--ignore-eos"]
    cmd += ["-n", str(N_PREDICT), "--temp", "0", "--seed", "42", "-c", str(N_CTX)]
    for p in PROMPTS:
        cmd += ["--prompt", p]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"run_node.mjs failed ({res.returncode}):\n{res.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_pyodide_matches_cpython_greedy(smollm2_path: Path) -> None:
    dist = build_dist()
    t0 = time.perf_counter()
    node_out = pyodide_greedy(dist, smollm2_path)
    node_wall = time.perf_counter() - t0
    cpy_prompts, cpy_tokens, cpy_tps = cpython_greedy(smollm2_path)

    results = node_out["results"]
    assert len(results) == len(PROMPTS)
    for text, r, ids, expected in zip(PROMPTS, results, cpy_prompts, cpy_tokens, strict=True):
        assert r["prompt_tokens"] == ids, f"tokenization differs for {text!r}"
        assert len(expected) == N_PREDICT
        assert r["tokens"] == expected, f"greedy tokens differ for {text!r}:\n pyodide {r['tokens']}\n cpython {expected}"

    pyo_tps = [r["timings"]["predicted_per_second"] for r in results]
    report = {
        "model": smollm2_path.name,
        "weights": "packed",
        "n_predict": N_PREDICT,
        "prompts": PROMPTS,
        "tokens": cpy_tokens,
        "cpython_packed_tok_per_s": round(cpy_tps, 2),
        "pyodide_node_tok_per_s": [round(x, 2) for x in pyo_tps],
        "pyodide_boot_ms": round(node_out["boot_ms"]),
        "pyodide_model_load_ms": round(node_out["load_ms"]),
        "node_wall_s": round(node_wall, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "wasm_parity.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"\nSmolLM2 greedy decode, packed weights: CPython {cpy_tps:.2f} tok/s, "
        f"Pyodide/Node {sum(pyo_tps) / len(pyo_tps):.2f} tok/s "
        f"(boot {node_out['boot_ms'] / 1000:.1f} s, load {node_out['load_ms'] / 1000:.1f} s)"
    )
    assert all(x > 0 for x in pyo_tps)
