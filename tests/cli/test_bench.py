"""`pyllama bench`: flags, JSON shape, -t, --profile, --roofline, --mem-budget and --vs.

Runs the real engine on SmolLM2 with tiny -p/-n. --vs is tested against a stand-in script
that prints llama-bench's JSON format (llama-bench is an external tool, not on CI); the real
llama-bench is used by the oracle-marked test when it has been built.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyllama.cli.bench_vs import parse_llama_bench_json
from pyllama.cli.blas_threads import get_threads, set_threads
from pyllama.cli.main import main as cli_main
from pyllama.profiling import CATEGORIES, OpProfiler, classify

LLAMA_BENCH = os.environ.get("LLAMA_BENCH", "/work/llamabench/src/build/bin/llama-bench")

# The shape of llama-bench's `-p 16 -n 4 -r 1 -o json` output, trimmed to the fields the parser
# needs and a few others (a real row has ~45, which the parser ignores).
REAL_ROWS = """[
  {
    "build_commit": "0c1e5709", "model_filename": "m.gguf", "n_threads": 2, "n_prompt": 16,
    "n_gen": 0, "n_depth": 0, "avg_ns": 80000000, "stddev_ns": 0, "avg_ts": 200.0, "stddev_ts": 0.0,
    "samples_ns": [ 80000000 ], "samples_ts": [ 200.0 ]
  },
  {
    "build_commit": "0c1e5709", "model_filename": "m.gguf", "n_threads": 2, "n_prompt": 0,
    "n_gen": 4, "n_depth": 0, "avg_ns": 40000000, "stddev_ns": 0, "avg_ts": 100.0, "stddev_ts": 0.0,
    "samples_ns": [ 40000000 ], "samples_ts": [ 100.0 ]
  }
]
"""


def pyllama(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyllama.cli.main", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert cli_main(["bench", *args, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """In-process runs change OpenBLAS's thread count; put it back for the other tests."""
    before = get_threads()
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    yield
    if before is not None:
        set_threads(before)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def stand_in(tmp_path: Path, pp: float, tg: float, *, exit_code: int = 0, text: str | None = None) -> tuple[Path, Path]:
    """An executable printing llama-bench's JSON for the -p/-n it is given; logs each call."""
    log = tmp_path / "calls.log"
    script = tmp_path / "llama-bench"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "a = sys.argv[1:]\n"
        f"open({str(log)!r}, 'a').write(' '.join(a) + '\\n')\n"
        f"if {exit_code}:\n"
        f"    print('error: failed to load model', file=sys.stderr); sys.exit({exit_code})\n"
        f"if {text!r} is not None:\n"
        f"    print({text!r}); sys.exit(0)\n"
        "p, n = int(a[a.index('-p') + 1]), int(a[a.index('-n') + 1])\n"
        "rows = []\n"
        f"if p: rows.append({{'n_prompt': p, 'n_gen': 0, 'avg_ts': {pp}, 'samples_ts': [{pp}]}})\n"
        f"if n: rows.append({{'n_prompt': 0, 'n_gen': n, 'avg_ts': {tg}, 'samples_ts': [{tg}]}})\n"
        "print(json.dumps(rows, indent=2))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


# -- flags and output --------------------------------------------------------------------
def test_json_shape_and_flags(smollm2_path: Path, capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    data = run_json(capsys, "-m", str(smollm2_path), "-p", "8", "-n", "2", "-r", "2", "-t", "1", "--weights", "packed")
    rows = {r["test"]: r for r in data["results"]}
    assert set(rows) == {"pp8", "tg2"}
    assert rows["pp8"]["n_prompt"] == 8 and rows["pp8"]["n_gen"] == 0 and rows["tg2"]["n_gen"] == 2
    for r in rows.values():
        assert len(r["samples_ts"]) == 2 and all(s > 0 for s in r["samples_ts"])
        assert min(r["samples_ts"]) <= r["median_ts"] <= max(r["samples_ts"])
        assert r["weights"] == "packed" and r["threads"] == 1 and r["numerics"] == "fast"
    assert data["peak_rss_mib"] > 50
    assert 0 < data["load_seconds"] < 60
    assert data["n_ctx"] == 8 + 2 + 8  # -c defaults to -p + -n (llama-bench), not the 4096 of `run`


def test_markdown_table(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "-m", str(smollm2_path), "-p", "0", "-n", "2", "-r", "1", "--weights", "packed"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| model | size | params | weights | threads | test | t/s |"
    assert "| tg2 |" in out[2] and "± " in out[2] and "pp" not in out[2]


@pytest.mark.parametrize("flags, expect", [
    (["-p", "0", "-n", "0"], "nothing to measure"),
    (["-r", "0"], "-r must be >= 1"),
    (["-t", "0"], "-t must be >= 1"),
    (["-p", "-3"], "-p must be >= 0"),
    (["-d", "-1"], "-d must be >= 0"),
])
def test_bad_flags_one_line(smollm2_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expect: str) -> None:
    assert cli_main(["bench", "-m", str(smollm2_path), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0]


def test_threads_flag_reaches_openblas(smollm2_path: Path) -> None:
    """-t goes through the environment before NumPy loads (a fresh process) and is what OpenBLAS reports."""
    if get_threads() is None:
        pytest.skip("NumPy here is not built on OpenBLAS")
    for t in ("1", "2"):
        r = pyllama("bench", "-m", str(smollm2_path), "-p", "4", "-n", "0", "-r", "1", "-t", t, "--weights", "packed",
                    "-o", "json", env={"OPENBLAS_NUM_THREADS": "3"})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["results"][0]["threads"] == int(t)
    # without -t, the environment (read when NumPy loads) decides
    r = pyllama("bench", "-m", str(smollm2_path), "-p", "4", "-n", "0", "-r", "1", "--weights", "packed", "-o", "json",
                env={"OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0 and json.loads(r.stdout)["threads"] == 1, r.stderr


def test_set_threads_at_run_time(keep_threads: None) -> None:
    if get_threads() is None:
        pytest.skip("NumPy here is not built on OpenBLAS")
    assert set_threads(1) and get_threads() == 1 and os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert set_threads(2) and get_threads() == 2
    with pytest.raises(ValueError):
        set_threads(0)


# -- --profile and --roofline ------------------------------------------------------------
def test_profile_categories_sum_to_100(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "-m", str(smollm2_path), "-p", "8", "-n", "2", "-r", "1", "--weights", "packed",
                    "--profile")
    for name in ("pp", "tg"):
        prof = data["profile"][name]
        cats = prof["categories"]
        assert set(cats) == set(CATEGORIES)
        assert abs(sum(c["percent"] for c in cats.values()) - 100.0) < 1e-6
        assert abs(sum(c["ms_per_token"] for c in cats.values()) - prof["ms_per_token"]) < 1e-6 * prof["ms_per_token"]
        assert cats["matmul"]["percent"] > 20  # SmolLM2's 30 layers of projections dominate
        assert cats["attention"]["percent"] > 0 and cats["norm"]["percent"] > 0
        assert len(prof["layers_ms_per_token"]) == 30
        assert sum(prof["layers_ms_per_token"]) <= prof["ms_per_token"] * 1.0001
    assert data["profile"]["tg"]["categories"]["sampling"]["percent"] > 0
    assert data["profile"]["tg"]["categories"]["output head"]["percent"] > 0


def test_profile_markdown(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "-m", str(smollm2_path), "-p", "4", "-n", "1", "-r", "1", "--weights", "packed",
                     "--profile"]) == 0
    out = capsys.readouterr().out
    assert "| category | pp ms/token | pp % | tg ms/token | tg % |" in out
    assert all(f"| {c} |" in out for c in CATEGORIES)
    assert "tg per layer: mean" in out


def test_roofline(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "-m", str(smollm2_path), "-p", "0", "-n", "2", "-r", "1", "--weights", "packed",
                    "--roofline")
    r = data["roofline"]
    # packed Q4_1: the GGUF's bytes minus the untied-lookup saving; SmolLM2 ties its head, so ~all 96 MB
    assert 90e6 < r["bytes_per_token"] < 100e6
    assert r["copy_gbs"] > 0.5 and r["bound_ts"] == pytest.approx(r["copy_gbs"] * 1e9 / r["bytes_per_token"])
    assert 0 < r["fraction_of_bound"] < 1.5


_CLOCK = [0.0]  # the profiler's clock in this test: only _burn moves it, so the shares are exact


def _burn(units: float) -> None:
    _CLOCK[0] += units


def rms_norm() -> None:
    _burn(2)


def linear_proj() -> None:
    _burn(3)


def head() -> None:
    linear_proj()  # sticky: counts as the output head, not matmul


def block(layer: int) -> None:
    rms_norm()
    linear_proj()


def test_profiler_attributes_by_name_pattern() -> None:
    # a clock only _burn advances: the attribution is checked, not this machine's timing
    with OpProfiler(clock=lambda: _CLOCK[0]) as p:
        block(0)
        block(1)
        head()
        _burn(1)
    s = p.profile.seconds  # in units of one _burn(1)
    assert s["norm"] == pytest.approx(4)
    assert s["matmul"] == pytest.approx(6)
    assert s["output head"] == pytest.approx(3)
    assert s["other"] == pytest.approx(1)
    assert s["attention"] == s["rope"] == s["sampling"] == 0
    assert sorted(p.profile.layer_seconds) == [0, 1]
    assert p.profile.layer_seconds[0] == pytest.approx(5)
    assert abs(sum(p.profile.shares().values()) - 100.0) < 1e-9


def test_classify_survives_renames() -> None:
    assert classify("pyllama.linear", "Linear.__call__") == "matmul"
    assert classify("pyllama.quant.matmul", "q4_1_matvec") == "matmul"
    assert classify("pyllama.ops", "RopeTable.apply") == "rope"
    assert classify("pyllama.ops", "attention") == "attention"
    assert classify("pyllama.flash_attn", "flash_attn_f16") == "attention"
    assert classify("pyllama.numerics", "rms_norm") == "norm"
    assert classify("pyllama.numerics", "swiglu") == "activation"
    assert classify("pyllama.models.llama", "LlamaModel.head") == "output head"
    assert classify("pyllama.sampling.sampler", "Sampler.sample") == "sampling"
    assert classify("pyllama.models.llama", "LlamaModel.hidden") is None
    assert classify("pyllama.brand_new", "something_else") is None


# -- --mem-budget ------------------------------------------------------------------------
def test_mem_budget_refuses_dense_in_one_line(smollm2_path: Path) -> None:
    t0 = time.perf_counter()
    r = pyllama("bench", "-m", str(smollm2_path), "--weights", "dense", "--mem-budget", "100", "-p", "4", "-n", "1")
    assert time.perf_counter() - t0 < 60  # refused before repacking
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "dense weights 513 MiB + KV cache" in lines[0] and "exceeds the memory budget of 100 MiB" in lines[0]
    assert "--weights packed" in lines[0]
    assert r.stdout == ""


def test_mem_budget_reports_footprint_and_auto_falls_back(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "-m", str(smollm2_path), "--mem-budget", "300", "-c", "512", "-p", "4", "-n", "0", "-r", "1")
    err = capsys.readouterr().err
    assert data["weights"] == "packed"
    assert cli_main(["bench", "-m", str(smollm2_path), "--mem-budget", "-1", "-p", "4", "-n", "0"]) == 1
    assert "--mem-budget must be a positive number" in capsys.readouterr().err
    del err


def test_mem_budget_footprint_line_for_dense(smollm2_path: Path) -> None:
    from pyllama.cli.common import CliError  # noqa: F401  (the error type the refusal uses)
    from pyllama.gguf_file import read_gguf
    from pyllama.memory import dense_footprint, kv_cache_bytes

    g = read_gguf(smollm2_path)
    fp = dense_footprint(g, 512)
    # 30 layers x 512 cells x 3 KV heads x (64 + 64) dims x 4 bytes: fast numerics hold f16 as float32
    assert fp.kv_cache == 30 * 512 * 3 * 128 * 4 == kv_cache_bytes(g, 512)
    # exact numerics keep 2 bytes (f16), and the memory of the cache the engine really allocates agrees
    assert kv_cache_bytes(g, 512, widen_f16=False) == 30 * 512 * 3 * 128 * 2
    assert kv_cache_bytes(g, 512, cache_type_k="q8_0", cache_type_v="f32") == int(30 * 512 * 3 * 64 * (34 / 32 + 4))
    assert fp.weights == 4 * sum(t.n_elements for t in g.tensors.values())
    assert fp.describe().startswith("dense weights 513 MiB + KV cache 22 MiB (n_ctx 512) = 536 MiB")


# -- --vs ------------------------------------------------------------------------------
def test_parse_llama_bench_json() -> None:
    assert parse_llama_bench_json(REAL_ROWS) == {"pp16": 200.0, "tg4": 100.0}
    deep = REAL_ROWS.replace('"n_depth": 0', '"n_depth": 64')
    assert parse_llama_bench_json(deep) == {"pp16 @ d64": 200.0, "tg4 @ d64": 100.0}


def test_depth_fills_the_cache_before_each_test(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyllama.cli.bench import bench_pp, bench_tg
    from pyllama.cli.bench_vs import parse_test_name, test_name
    from pyllama.engine import Model

    data = run_json(capsys, "-m", str(smollm2_path), "-p", "4", "-n", "2", "-d", "24", "-r", "1", "--weights", "packed")
    rows = {r["test"]: r for r in data["results"]}
    assert set(rows) == {"pp4 @ d24", "tg2 @ d24"} and all(r["n_depth"] == 24 for r in rows.values())
    assert data["n_ctx"] == 24 + 4 + 2 + 8
    assert parse_test_name(test_name("tg", 32, 1500)) == ("tg", 32, 1500) and test_name("pp", 8) == "pp8"
    model = Model.load(smollm2_path, n_ctx=64, weights="packed")
    bench_tg(model, 3, depth=20)
    assert model.kv.length(0) == 20 + 1 + 3  # the depth, the first token, the timed steps
    bench_pp(model, 5, depth=30)
    assert model.kv.length(0) == 30 + 5


def test_vs_alternates_and_prints_ratios(smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe, log = stand_in(tmp_path, pp=1e6, tg=5e5)
    data = run_json(capsys, "-m", str(smollm2_path), "-p", "8", "-n", "2", "-r", "3", "-t", "2", "--weights", "packed",
                    "--vs", str(exe))
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    assert calls[0] == f"-m {smollm2_path} -p 8 -n 2 -r 1 -t 2 -o json"
    rows = {r["test"]: r for r in data["comparison"]}
    assert set(rows) == {"pp8", "tg2"}
    for name, theirs in (("pp8", 1e6), ("tg2", 5e5)):
        r = rows[name]
        assert r["llama_cpp_samples_ts"] == [theirs] * 3 and len(r["pyllama_samples_ts"]) == 3
        assert r["ratio"] == pytest.approx(r["pyllama_ts"] / theirs)
    res = {r["test"]: r for r in data["results"]}
    assert res["tg2"]["median_ts"] == pytest.approx(rows["tg2"]["pyllama_ts"])


def test_vs_markdown(smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe, _ = stand_in(tmp_path, pp=100.0, tg=50.0)
    assert cli_main(["bench", "-m", str(smollm2_path), "-p", "0", "-n", "2", "-r", "1", "--weights", "packed",
                     "--vs", str(exe)]) == 0
    out = capsys.readouterr().out
    assert "| model | weights | threads | test | pyllama t/s | llama.cpp t/s | pyllama/llama.cpp |" in out
    line = next(x for x in out.splitlines() if "| 50.00 |" in x)
    ours = float(line.split("|")[5])
    assert float(line.split("|")[7]) == pytest.approx(ours / 50.0, abs=0.002)


@pytest.mark.parametrize("kind, expect", [
    ("missing", "not an executable file"),
    ("fails", "exited with status 1: error: failed to load model"),
    ("garbage", "llama-bench printed no JSON"),
    ("no_tg", "its output has no tg2 row"),
])
def test_vs_errors_are_one_line(smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                kind: str, expect: str) -> None:
    if kind == "missing":
        exe = tmp_path / "nope"
    elif kind == "fails":
        exe, _ = stand_in(tmp_path, 1, 1, exit_code=1)
    elif kind == "garbage":
        exe, _ = stand_in(tmp_path, 1, 1, text="main: loading model")
    else:
        exe, _ = stand_in(tmp_path, 1, 1, text='[{"n_prompt": 4, "n_gen": 0, "avg_ts": 9.5}]')
    code = cli_main(["bench", "-m", str(smollm2_path), "-p", "4", "-n", "2", "-r", "1", "--weights", "packed",
                     "--vs", str(exe)])
    assert code == 1
    err = capsys.readouterr().err
    assert expect in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert kind != "missing" or len(err.strip().splitlines()) == 1  # checked before loading the model


@pytest.mark.oracle
def test_vs_real_llama_bench(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not os.access(LLAMA_BENCH, os.X_OK):
        pytest.skip(f"no llama-bench at {LLAMA_BENCH} (set LLAMA_BENCH)")
    # -t 1: ggml's two spinning threads crawl (2-22 t/s) when the 2 cores are shared with other jobs
    data = run_json(capsys, "-m", str(smollm2_path), "-p", "16", "-n", "4", "-r", "3", "-t", "1", "--vs", LLAMA_BENCH)
    rows = {r["test"]: r for r in data["comparison"]}
    assert set(rows) == {"pp16", "tg4"}
    for r in rows.values():
        assert len(r["llama_cpp_samples_ts"]) == 3 and all(x > 0.5 for x in r["llama_cpp_samples_ts"])
        assert r["ratio"] == pytest.approx(r["pyllama_ts"] / r["llama_cpp_ts"])


# -- wasm/bench_node.py (the Pyodide measurement; the Node run itself is exercised by make bench-wasm)
@pytest.mark.parametrize("flags, expect", [
    (["--weights", "sparse"], "--weights takes dense and/or packed, not 'sparse'"),
    (["-n", "0"], "-n and -r must be >= 1"),
    (["-m", "/nonexistent.gguf"], "/nonexistent.gguf: no such file"),
])
def test_bench_node_rejects_bad_flags(smollm2_path: Path, flags: list[str], expect: str) -> None:
    script = Path(__file__).resolve().parents[2] / "wasm" / "bench_node.py"
    r = subprocess.run([sys.executable, str(script), "-m", str(smollm2_path), "--no-build", *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"bench_node: {expect}", r.stderr
    assert "Traceback" not in r.stderr


def test_no_resource_module_means_no_peak_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pyodide has no `resource`: bench.py must import without it and report peak RSS as None."""
    import importlib

    import pyllama.cli.bench as bench

    assert bench.peak_rss_mib() is not None
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource -> ImportError
    reloaded = importlib.reload(bench)
    assert reloaded.peak_rss_mib() is None


def test_packing_flag_chooses_the_packed_layout(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--packing nibbles holds SmolLM2's 4-bit weights two per byte: ~98 MiB instead of int8's 157."""
    import re

    sizes = {}
    for layout in ("int8", "nibbles", "int8"):  # the second int8: nothing of the nibbles run stays behind
        assert cli_main(["bench", "-m", str(smollm2_path), "-p", "0", "-n", "2", "-r", "1", "--weights", "packed",
                         "--packing", layout]) == 0
        m = re.search(r"weights packed \((\d+) MiB\)", capsys.readouterr().err)
        assert m is not None
        if layout in sizes:
            assert int(m.group(1)) == sizes[layout]
        sizes[layout] = int(m.group(1))
    assert sizes["nibbles"] < 110 < 150 < sizes["int8"]
