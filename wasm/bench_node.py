#!/usr/bin/env python3
"""Token-generation speed of the unchanged engine under Pyodide in Node.js (`make bench-wasm`).

Why a separate script: `pyllama bench` measures CPython + OpenBLAS; the browser runs the
same engine under Pyodide, where NumPy has no BLAS and the best layout differs. This drives
wasm/run_node.mjs (the browser worker's own session code) with greedy decoding and
--ignore-eos, so every run generates exactly -n tokens, and reports the median tg t/s.

Each weights mode is one Node process: the model is loaded once and the same prompt is
generated -r + 1 times; the first generation is a warm-up and is dropped. Needs `node`;
the offline Pyodide directory is assembled by wasm/build.py (downloads cached).

--profile adds, per weights mode, pyllama.profiling's breakdown (per op category, per layer)
of a 32-token prompt pass and -n decode steps under Pyodide, the table `pyllama bench
--profile` prints for CPython.

Usage: python wasm/bench_node.py [-m MODEL] [-n 32] [-r 3] [--weights dense,packed]
                                 [--numerics fast|exact] [--dist DIR] [--profile] [-o md|json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_DIST = Path.home() / ".cache" / "pyllama" / "wasm-bench-dist"
DEFAULT_MODEL = Path.home() / ".cache" / "pyllama" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Once upon a time"


def build(dist: Path) -> None:
    """Assemble the Pyodide directory with a pyllama wheel of this checkout (its own copy, so
    a test run rebuilding wasm/dist at the same time does not interfere)."""
    r = subprocess.run([sys.executable, str(HERE / "build.py"), "--out", str(dist)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_node: wasm/build.py failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")


def run(dist: Path, model: Path, weights: str, n: int, reps: int, exact: bool, n_ctx: int) -> dict[str, Any]:
    cmd = ["node", str(HERE / "run_node.mjs"), str(dist), str(model), "-n", str(n), "--ignore-eos", "--json",
           "--weights", weights, "-c", str(n_ctx)]
    cmd += [] if exact else ["--fast"]
    for _ in range(reps + 1):
        cmd += ["--prompt", PROMPT]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_node: node exited with {r.returncode}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    data = json.loads(r.stdout.strip().splitlines()[-1])
    samples = [float(x["timings"]["predicted_per_second"]) for x in data["results"][1:]]
    for x in data["results"]:
        if x["timings"]["predicted_n"] != n:
            sys.exit(f"bench_node: a run generated {x['timings']['predicted_n']} tokens, not {n}")
    return {
        "model": model.name, "weights": weights, "numerics": "exact" if exact else "fast", "test": f"tg{n}",
        "median_ts": statistics.median(samples), "samples_ts": samples,
        "boot_ms": data["boot_ms"], "load_ms": data["load_ms"], "wall_s": time.perf_counter() - t0,
    }


def profile(dist: Path, model: Path, weights: str, n: int, exact: bool, n_ctx: int) -> dict[str, Any]:
    cmd = ["node", str(HERE / "run_node.mjs"), str(dist), str(model), "--profile", str(n), "--weights", weights,
           "-c", str(max(n_ctx, 32 + n + 8))] + ([] if exact else ["--fast"])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_node: node exited with {r.returncode}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    prof: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])["profile"]
    return prof


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("-c", "--ctx-size", type=int, default=256)
    ap.add_argument("--weights", default="dense,packed", help="comma-separated: dense, packed")
    ap.add_argument("--numerics", choices=["fast", "exact"], default="fast")
    ap.add_argument("--dist", type=Path, default=DEFAULT_DIST, help="where to assemble Pyodide (default: %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="use --dist as it is")
    ap.add_argument("--profile", action="store_true", help="also: time per op category and layer (Pyodide)")
    ap.add_argument("-o", "--output", choices=["md", "json"], default="md")
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"bench_node: {args.model}: no such file")
    if args.n_gen < 1 or args.repetitions < 1:
        sys.exit("bench_node: -n and -r must be >= 1")
    modes = [w.strip() for w in args.weights.split(",") if w.strip()]
    if not modes or any(w not in ("dense", "packed") for w in modes):
        sys.exit(f"bench_node: --weights takes dense and/or packed, not {args.weights!r}")
    if not args.no_build:
        build(args.dist)
    rows = [run(args.dist, args.model, w, args.n_gen, args.repetitions, args.numerics == "exact", args.ctx_size)
            for w in modes]
    profiles = {w: profile(args.dist, args.model, w, args.n_gen, args.numerics == "exact", args.ctx_size)
                for w in modes} if args.profile else {}
    if args.output == "json":
        print(json.dumps({"node": _node_version(), "results": rows, "profile": profiles}, indent=2))
        return 0
    print(f"Pyodide 0.27.7 in Node {_node_version()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| model | weights | numerics | test | t/s (median) | samples | load |")
    print("| ----- | ------- | -------- | ---: | -----------: | ------- | ---: |")
    for r in rows:
        s = ", ".join(f"{x:.2f}" for x in r["samples_ts"])
        print(f"| {r['model']} | {r['weights']} | {r['numerics']} | {r['test']} | {r['median_ts']:.2f} | {s} "
              f"| {r['load_ms'] / 1000:.1f} s |")
    if profiles:
        from pyllama.cli.bench import print_profile

        for w, prof in profiles.items():
            print(f"\n{w} weights under Pyodide:", end="")
            print_profile(prof)
    return 0


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        sys.exit("bench_node: `node` is not installed")


if __name__ == "__main__":
    raise SystemExit(main())
