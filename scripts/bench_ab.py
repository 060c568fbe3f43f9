"""A/B speed of two checkouts of pyllama on the same machine, alternating, medians.

Usage (from a checkout with its .venv; BASE is a directory holding another checkout, or a
git ref, which is checked out into a temporary detached worktree):

    .venv/bin/python scripts/bench_ab.py --base 847dab0
    .venv/bin/python scripts/bench_ab.py --base ../base847 --rounds 9 -t 2 --case smollm2:dense

Both sides run with this interpreter, each with cwd and PYTHONPATH set to its own tree.

--mode interleave (default): one worker process per side loads the model once, then the
sides take turns test by test (pp, then tg, in the order base new new base ...), --rounds
times. Alternating at the scale of one test (about a second) is what makes a ratio
trustworthy on a shared machine; each test reports wall-clock t/s (llama-bench's) and
t/s per CPU second of the process (for tg: of its median decode step), which other
processes' load disturbs far less.

--mode process: each round runs `python -m pyllama.cli.main bench ... -r R -o json` once
per side (ABBA order), the CLI exactly as a user runs it; coarser alternation.

A side's figure is the median of its samples; the ratio is new / base. The 1-minute load
average is read before every sample and reported: on a shared machine a ratio means
little without it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pyllama import model_files  # noqa: E402

MODELS = {"smollm2": model_files.SMOLLM2, "gemma3": model_files.GEMMA3_270M}
DEFAULT_CASES = ["smollm2:dense", "smollm2:packed", "gemma3:dense"]


def model_path(name: str) -> Path:
    if name in MODELS:
        found = model_files.installed_default_model() if name == "smollm2" else None
        return found if found is not None else model_files.fetch(MODELS[name])
    path = Path(name)
    if not path.is_file():
        sys.exit(f"bench_ab: {name}: neither a known model ({', '.join(MODELS)}) nor a file")
    return path


def checkout(base: str) -> Path:
    """A directory holding BASE: itself if it is one, else a detached worktree of the ref."""
    if Path(base).is_dir():
        return Path(base).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="pyllama-ab-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp), base], check=True,
                   stdout=subprocess.DEVNULL)
    atexit.register(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp)],
                    check=False)
    return tmp


def load1() -> float:
    return os.getloadavg()[0]


def run_process(tree: Path, model: Path, weights: str, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """One `pyllama bench` run in `tree`: {"pp256": (median t/s, nan), ...} (the CLI reports no CPU time)."""
    cmd = [args.python, "-m", "pyllama.cli.main", "bench", "-m", str(model), "--weights", weights,
           "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.repetitions), "-t", str(args.threads),
           "-o", "json"]
    done = subprocess.run(cmd, cwd=tree, env=side_env(tree, args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_ab: {tree}: bench failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {r["test"]: (float(r["median_ts"]), math.nan) for r in json.loads(done.stdout)["results"]}


def side_env(tree: Path, args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": str(args.threads)}


class Worker:
    """A process of one side holding the model, running one test per request (--mode interleave)."""

    def __init__(self, tree: Path, model: Path, weights: str, args: argparse.Namespace) -> None:
        cmd = [args.python, str(Path(__file__).resolve()), "--worker", str(model), weights,
               str(args.n_prompt + args.n_gen + 8)]
        self.tree = tree
        self.proc = subprocess.Popen(cmd, cwd=tree, env=side_env(tree, args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.ask("ready")

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            sys.exit(f"bench_ab: worker in {self.tree} exited ({self.proc.wait()})")
        return answer.strip()

    def test(self, kind: str, n: int) -> tuple[float, float]:
        wall, cpu = json.loads(self.ask(f"{kind} {n}"))
        return n / wall, n / cpu

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def worker(model: str, weights: str, n_ctx: str) -> int:
    """--worker: load with this tree's own CLI code, then time the tests asked on stdin."""
    import numpy as np

    from pyllama.cli.common import load_model
    from pyllama.cli.main import build_parser

    args = build_parser().parse_args(["bench", "-m", model, "--weights", weights, "-c", n_ctx])
    m = load_model(args)
    rng = np.random.default_rng(0)

    def pp(n: int) -> None:
        m.kv.clear(0)
        m.eval_prompt([int(t) for t in rng.integers(0, m.n_vocab, n)], 0, 0)

    steps: list[float] = []  # CPU seconds of each decode step of the last tg

    def tg(n: int) -> None:
        token = 1
        steps.clear()
        for _ in range(n):
            c = time.process_time()
            token = int(np.argmax(m.eval_prompt([token], 0)))
            steps.append(time.process_time() - c)

    for fn in (pp, tg):  # warm-up
        fn(8)
    for line in sys.stdin:
        kind, _, count = line.strip().partition(" ")
        if kind == "ready":
            print("ok", flush=True)
            continue
        n = int(count)
        if kind == "tg":
            m.kv.clear(0)
            m.eval_prompt([1], 0, 0)
        w0, c0 = time.perf_counter(), time.process_time()
        (pp if kind == "pp" else tg)(n)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if kind == "tg":  # the median step: a step another process slowed down does not count
            cpu = n * statistics.median(steps)
        print(json.dumps([wall, cpu]), flush=True)
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        return worker(*sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="directory of the other checkout, or a git ref")
    p.add_argument("--new", default=str(REPO), help="directory of the checkout under test (default: this one)")
    p.add_argument("--python", default=sys.executable, help="interpreter for both sides (default: this one)")
    p.add_argument("--case", action="append", help="MODEL:WEIGHTS, MODEL smollm2, gemma3 or a .gguf path "
                   f"(repeatable; default {' '.join(DEFAULT_CASES)})")
    p.add_argument("--mode", choices=["interleave", "process"], default="interleave")
    p.add_argument("--rounds", type=int, default=8, help="samples per side, test and case (alternating)")
    p.add_argument("-p", "--n-prompt", type=int, default=256)
    p.add_argument("-n", "--n-gen", type=int, default=32)
    p.add_argument("-r", "--repetitions", type=int, default=3, help="--mode process: bench's -r per run")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-o", "--output", choices=["md", "json"], default="md")
    args = p.parse_args()
    trees = {"base": checkout(args.base), "new": Path(args.new).resolve()}
    tests = [(k, n) for k, n in (("pp", args.n_prompt), ("tg", args.n_gen)) if n > 0]
    rows = []
    for case in args.case or DEFAULT_CASES:
        name, _, weights = case.partition(":")
        model, weights = model_path(name), weights or "dense"
        got: dict[str, dict[str, list[tuple[float, float]]]] = {"base": {}, "new": {}}
        loads: list[float] = []
        workers = {s: Worker(t, model, weights, args) for s, t in trees.items()} if args.mode == "interleave" else {}
        for i in range(args.rounds):
            order = ("base", "new") if i % 2 == 0 else ("new", "base")
            for side in order:
                loads.append(load1())
                if workers:
                    results = {f"{k}{n}": workers[side].test(k, n) for k, n in tests}
                else:
                    results = run_process(trees[side], model, weights, args)
                for test, ts in results.items():
                    got[side].setdefault(test, []).append(ts)
                print(f"[{case} {i + 1}/{args.rounds} {side}] load {loads[-1]:.2f} "
                      + " ".join(f"{t} {v[-1][0]:.1f} ({v[-1][1]:.1f}/cpu s)" for t, v in got[side].items()),
                      file=sys.stderr)
        for w in workers.values():
            w.close()
        for test in got["new"]:
            med = {s: [statistics.median(x[j] for x in got[s][test]) for j in (0, 1)] for s in got}
            rows.append({"case": case, "test": test, "base_ts": med["base"][0], "new_ts": med["new"][0],
                         "ratio": med["new"][0] / med["base"][0], "base_cpu_ts": med["base"][1],
                         "new_cpu_ts": med["new"][1], "cpu_ratio": med["new"][1] / med["base"][1],
                         "base_samples": got["base"][test], "new_samples": got["new"][test],
                         "load_min": min(loads), "load_max": max(loads)})
    if args.output == "json":
        print(json.dumps({"base": str(trees["base"]), "new": str(trees["new"]), "threads": args.threads,
                          "mode": args.mode, "rows": rows}, indent=2))
        return 0
    print(f"base {trees['base']}, new {trees['new']}, {args.threads} thread(s), "
          f"{args.rounds} samples per side alternating ({args.mode})\n")
    print("| case | test | base t/s | new t/s | new/base | base t/CPU s | new t/CPU s | new/base (CPU) | load avg |")
    print("| ---- | ---- | -------: | ------: | -------: | -----------: | ----------: | -------------: | -------- |")
    for r in rows:
        cpu = ("- | - | -" if math.isnan(r["cpu_ratio"])  # --mode process: the CLI reports no CPU time
               else f"{r['base_cpu_ts']:.1f} | {r['new_cpu_ts']:.1f} | {r['cpu_ratio']:.2f}x")
        print(f"| {r['case']} | {r['test']} | {r['base_ts']:.1f} | {r['new_ts']:.1f} | {r['ratio']:.2f}x | {cpu} "
              f"| {r['load_min']:.1f}-{r['load_max']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
