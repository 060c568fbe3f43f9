"""The `pyllama` command as a user runs it: real processes on the real default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GOLDEN


def pyllama(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyllama.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},
    )


def test_tokenize_ids_match_llama_cpp(smollm2_path: Path, golden_tokenization: Any) -> None:
    cases = [
        c for c in golden_tokenization["cases"]
        if c["model"].startswith("SmolLM2") and c["parse_special"] and "\n" not in c["text"]
    ][:3]
    assert cases
    for case in cases:
        r = pyllama("tokenize", "-m", str(smollm2_path), "-p", case["text"], "--ids")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == case["ids"], case["text"]
    r2 = pyllama("tokenize", "-m", str(smollm2_path), "-p", "Hello world", "--show-count")
    assert "Total number of tokens: 2" in r2.stdout


def test_info_prints_metadata_and_types(smollm2_path: Path) -> None:
    r = pyllama("info", "-m", str(smollm2_path))
    assert r.returncode == 0, r.stderr
    assert "llama.block_count" in r.stdout
    assert "type   Q4_1:  210 tensors" in r.stdout
    assert "n_layer          = 30" in r.stdout


@pytest.mark.parametrize(
    "content, expect",
    [(None, "no such file"), (b"PK\x03\x04 not a model", "not a GGUF file"), (b"GGUF\x03\x00\x00\x00", "truncated")],
)
def test_bad_model_is_one_line_error(tmp_path: Path, content: bytes | None, expect: str) -> None:
    p = tmp_path / "m.gguf"
    if content is not None:
        p.write_bytes(content)
    for cmd in ("info", "run"):
        r = pyllama(cmd, "-m", str(p), *(["-p", "hi"] if cmd == "run" else []))
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_run_streams_greedy_text_only(smollm2_path: Path) -> None:
    r = pyllama("run", "-m", str(smollm2_path), "-p", "The capital of France is", "-n", "4", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(" Paris.")
    assert "tok/s" in r.stderr and "tok/s" not in r.stdout


@pytest.mark.parity
@pytest.mark.parametrize("weights", ["dense", "packed"])
def test_perplexity_within_one_percent(smollm2_path: Path, weights: str) -> None:
    golden = json.loads((GOLDEN / "perplexity.json").read_text())
    want = next(r["final_ppl"] for r in golden["results"] if r["model"].startswith("SmolLM2"))
    r = pyllama("perplexity", "-m", str(smollm2_path), "-f", str(GOLDEN / "ppl_text.txt"), "-c", "128",
                "--weights", weights)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("Final estimate"))
    got = float(line.split("=")[1].split("+/-")[0])
    assert abs(got - want) / want < 0.01, (got, want)


def test_bench_prints_table(smollm2_path: Path) -> None:
    r = pyllama("bench", "-m", str(smollm2_path), "-p", "16", "-n", "4", "-r", "1", "-o", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    tests = {x["test"]: x for x in data["results"]}
    assert set(tests) == {"pp16", "tg4"} and all(x["avg_ts"] > 0 for x in tests.values())
    assert data["peak_rss_mib"] > 50
