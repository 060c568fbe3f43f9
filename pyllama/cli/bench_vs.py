"""`pyllama bench --vs LLAMA_BENCH`: pyllama and llama.cpp on the same GGUF, side by side.

The two take turns (llama-bench once, then pyllama once, -r times) so that whatever else
the machine is doing at the time weighs on both alike; we report each side's median and
the ratio pyllama / llama.cpp. llama-bench runs as a child process with `-r 1 -o json`
(its own warm-up included) and we read the `avg_ts` of its pp and tg rows.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyllama.cli.common import CliError


@dataclass
class Comparison:
    """tokens/second samples per test ("pp256", "tg32") for each side."""

    ours: dict[str, list[float]] = field(default_factory=dict)
    theirs: dict[str, list[float]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for test in self.ours:
            mine, other = self.ours[test], self.theirs.get(test, [])
            m = statistics.median(mine)
            o = statistics.median(other) if other else float("nan")
            out.append({
                "test": test, "pyllama_ts": m, "llama_cpp_ts": o, "ratio": m / o if other and o > 0 else float("nan"),
                "pyllama_samples_ts": mine, "llama_cpp_samples_ts": other,
            })
        return out


def test_name(kind: str, n: int, depth: int = 0) -> str:
    """llama-bench's test column: "pp256", "tg32", "tg32 @ d1500"."""
    return f"{kind}{n}" + (f" @ d{depth}" if depth > 0 else "")


def parse_test_name(name: str) -> tuple[str, int, int]:
    """test_name's inverse: (kind, n, depth)."""
    head, _, depth = name.partition(" @ d")
    return head[:2], int(head[2:]), int(depth) if depth else 0


def parse_llama_bench_json(text: str) -> dict[str, float]:
    """{"pp256": t/s, "tg32 @ d1500": t/s} from llama-bench's `-o json` output (a list of test rows)."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"llama-bench printed no JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise CliError("llama-bench JSON is not a list of test rows")
    out: dict[str, float] = {}
    for row in rows:
        if not isinstance(row, dict) or "avg_ts" not in row:
            raise CliError("llama-bench JSON row without avg_ts")
        n_prompt, n_gen = int(row.get("n_prompt", 0)), int(row.get("n_gen", 0))
        depth = int(row.get("n_depth", 0))
        if n_prompt > 0 and n_gen == 0:
            out[test_name("pp", n_prompt, depth)] = float(row["avg_ts"])
        elif n_gen > 0 and n_prompt == 0:
            out[test_name("tg", n_gen, depth)] = float(row["avg_ts"])
    return out


def run_llama_bench(
    exe: str, model: str, n_prompt: int, n_gen: int, threads: int, timeout: float = 900, depth: int = 0,
) -> dict[str, float]:
    """One llama-bench run (-r 1) of pp n_prompt and tg n_gen (after `depth` cached tokens)."""
    if not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        raise CliError(f"--vs {exe}: not an executable file")
    cmd = [exe, "-m", model, "-p", str(n_prompt), "-n", str(n_gen), "-r", "1", "-t", str(threads), "-o", "json"]
    if depth > 0:
        cmd += ["-d", str(depth)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CliError(f"--vs {exe}: no result within {timeout:.0f} s") from None
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CliError(f"--vs {exe} exited with status {r.returncode}: {tail}")
    return parse_llama_bench_json(r.stdout)


def compare(
    exe: str, model: str, tests: list[tuple[str, int]], repetitions: int, threads: int,
    ours: Callable[[str, int], float], depth: int = 0,
) -> Comparison:
    """Alternate: llama-bench (all tests) then `ours(kind, n)` for each test, `repetitions` times."""
    n_prompt = next((n for k, n in tests if k == "pp"), 0)
    n_gen = next((n for k, n in tests if k == "tg"), 0)
    c = Comparison()
    for _ in range(max(1, repetitions)):
        theirs = run_llama_bench(exe, model, n_prompt, n_gen, threads, depth=depth)
        for kind, n in tests:
            name = test_name(kind, n, depth)
            if name not in theirs:
                raise CliError(f"--vs {exe}: its output has no {name} row")
            c.theirs.setdefault(name, []).append(theirs[name])
            c.ours.setdefault(name, []).append(ours(kind, n))
    return c


def print_comparison(rows: list[dict[str, Any]], model: str, weights: str, threads: int) -> None:
    print("| model | weights | threads | test | pyllama t/s | llama.cpp t/s | pyllama/llama.cpp |")
    print("| ----- | ------- | ------: | ---: | ----------: | ------------: | ----------------: |")
    for r in rows:
        print(f"| {os.path.basename(model)} | {weights} | {threads} | {r['test']} | {r['pyllama_ts']:.2f} "
              f"| {r['llama_cpp_ts']:.2f} | {r['ratio']:.3f} |")
