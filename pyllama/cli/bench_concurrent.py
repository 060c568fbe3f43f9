"""`pyllama bench --concurrent N`: continuous-batching throughput, N requests vs one alone.

Both measurements drive the real Scheduler (the server's `step()` loop, without HTTP):
greedy requests of -n tokens with distinct prompts, no prompt cache. Aggregate tok/s =
generated tokens / wall time from submission to the last token (prompt steps included).
Rounds of 1 and of N requests alternate, so a change in machine load (this runs on shared
2-core machines) hits both sides; medians of -r rounds are reported.

The same measurement over HTTP, for pyllama-server or llama.cpp's llama-server, is
`python -m asgi.bench_http --url URL -n N` (kept in asgi/: the engine has no networking).

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

PROMPT = "Request {i}: write a short story about a lighthouse keeper who finds a message in a bottle."


def run_round(model: Model, n_tasks: int, n_gen: int, first_prompt: int = 0) -> tuple[float, float]:
    """(aggregate generated tokens per second, mean ms per step) of n_tasks concurrent greedy requests."""
    from pyllama.sampling import SamplingParams
    from pyllama.scheduler import Scheduler
    from pyllama.tasks import Event, Final, Task

    sched = Scheduler(model)
    sched.token_pieces()  # built once per scheduler; not part of the measurement
    done: list[Final] = []

    def emit(e: Event) -> None:
        if isinstance(e, Final):
            done.append(e)

    for i in range(n_tasks):
        prompt = model.tokenizer.tokenize(PROMPT.format(i=first_prompt + i))
        sched.submit(Task(prompt, SamplingParams(temperature=0.0, ignore_eos=True), n_predict=n_gen,
                          cache_prompt=False), emit)
    steps = 0
    t0 = time.perf_counter()
    while sched.has_work():
        sched.step()
        steps += 1
    dt = time.perf_counter() - t0
    if any(f.error for f in done):
        raise RuntimeError(next(f.error for f in done if f.error))
    return sum(f.n_decoded for f in done) / dt, 1e3 * dt / max(1, steps)


def bench_concurrent(args: argparse.Namespace) -> int:
    from pyllama.cli.blas_threads import get_threads, set_threads

    if getattr(args, "threads", None):
        set_threads(args.threads)
    n = args.concurrent
    n_gen = max(1, args.n_gen)
    args.ctx_size = max(args.ctx_size, n * (n_gen + 64))
    model = load_model(args, n_seq=n)
    run_round(model, 1, 4)  # warm-up
    singles: list[tuple[float, float]] = []
    multis: list[tuple[float, float]] = []
    for r in range(max(1, args.repetitions)):
        singles.append(run_round(model, 1, n_gen, 100 * r))
        multis.append(run_round(model, n, n_gen, 100 * r + 1))
    single = statistics.median(s[0] for s in singles)
    multi = statistics.median(m[0] for m in multis)
    threads = get_threads()
    result = {
        "model": os.path.basename(model.path), "weights": model.weights, "slots": n, "n_gen": n_gen,
        "blas_threads": threads, "single_ts": single, "concurrent_ts": multi, "ratio": multi / single,
        "single_ms_per_step": statistics.median(s[1] for s in singles),
        "concurrent_ms_per_step": statistics.median(m[1] for m in multis),
        "single_samples": [s[0] for s in singles], "concurrent_samples": [m[0] for m in multis],
    }
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"1 request: {single:.2f} tok/s ({result['single_ms_per_step']:.0f} ms/step); {n} concurrent "
              f"requests: {multi:.2f} tok/s aggregate ({result['concurrent_ms_per_step']:.0f} ms/step), "
              f"{multi / single:.2f}x; weights {model.weights}, BLAS threads {threads}")
    return 0
