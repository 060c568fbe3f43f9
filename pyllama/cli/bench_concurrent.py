"""`pyllama bench --concurrent N`: continuous-batching throughput, N requests vs one alone.

Kept apart from bench.py so the single-stream benchmark and the slots benchmark can grow
independently.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from pyllama.cli.common import load_model
from pyllama.engine import Model


def _run_tasks(model: Model, n_tasks: int, n_gen: int) -> float:
    """Generated tokens per second over n_tasks concurrent greedy requests."""
    from pyllama.sampling import SamplingParams
    from pyllama.scheduler import Event, Final, Scheduler, Task

    sched = Scheduler(model)
    done: list[Final] = []

    def emit(e: Event) -> None:
        if isinstance(e, Final):
            done.append(e)

    prompts = [f"Request {i}: write a short story about a lighthouse keeper." for i in range(n_tasks)]
    for p in prompts:
        sched.submit(Task(model.tokenizer.tokenize(p), SamplingParams(temperature=0.0, ignore_eos=True),
                          n_predict=n_gen, cache_prompt=False), emit)
    t0 = time.perf_counter()
    while sched.has_work():
        sched.step()
    dt = time.perf_counter() - t0
    return sum(f.n_decoded for f in done) / dt


def bench_concurrent(args: argparse.Namespace) -> int:
    n = args.concurrent
    args.ctx_size = max(args.ctx_size, n * (args.n_gen + 64))
    model = load_model(args, n_seq=n)
    _run_tasks(model, 1, 4)  # warm-up
    single = statistics.median(_run_tasks(model, 1, args.n_gen) for _ in range(max(1, args.repetitions)))
    multi = statistics.median(_run_tasks(model, n, args.n_gen) for _ in range(max(1, args.repetitions)))
    result = {"model": os.path.basename(model.path), "weights": model.weights, "slots": n, "n_gen": args.n_gen,
              "single_ts": single, "concurrent_ts": multi, "ratio": multi / single}
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"1 request: {single:.2f} tok/s; {n} concurrent requests: {multi:.2f} tok/s aggregate "
              f"({multi / single:.2f}x); weights {model.weights}")
    return 0
