"""`pyllama bench`: llama-bench's pp/tg measurements, printed in its table shape.

pp N: one forward pass over N prompt tokens from an empty cache; tg N: N single-token
steps. Each test runs -r times; we print mean +/- stddev tokens/second and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from typing import Any

import numpy as np

from pyllama.cli.common import add_model_args, guarded, load_model, log, resolve_model
from pyllama.engine import Model


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="prompt/generation speed (llama-bench)", description=__doc__)
    add_model_args(p)
    p.add_argument("-p", "--n-prompt", type=int, default=64, help="prompt tokens (0 = skip pp)")
    p.add_argument("-n", "--n-gen", type=int, default=32, help="generated tokens (0 = skip tg)")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, default=None, help="BLAS threads (sets OPENBLAS/OMP/MKL_NUM_THREADS)")
    p.add_argument("-o", "--output", choices=["md", "json"], default="md")
    p.add_argument("--tokenizer", action="store_true", help="measure tokenizer throughput (MB/s) instead")
    p.add_argument("--concurrent", type=int, default=0, metavar="N",
                   help="continuous batching: N greedy requests of -n tokens on N slots vs one alone")
    p.set_defaults(func=guarded(main))


def peak_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if platform.system() != "Darwin" else r / 2**20


def bench_pp(model: Model, n: int) -> float:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.n_vocab, n).tolist()
    model.kv.clear(0)
    t0 = time.perf_counter()
    model.eval_prompt(tokens, 0, 0)
    return n / (time.perf_counter() - t0)


def bench_tg(model: Model, n: int) -> float:
    model.kv.clear(0)
    model.eval_prompt([1], 0, 0)
    token = 1
    t0 = time.perf_counter()
    for _ in range(n):
        logits = model.eval_prompt([token], 0)
        token = int(np.argmax(logits))
    return n / (time.perf_counter() - t0)


def main(args: argparse.Namespace) -> int:
    if args.tokenizer:
        from pyllama.gguf_file import read_gguf
        from pyllama.tokenizer import Tokenizer, sample_text, tokenize_throughput

        tok = Tokenizer.from_gguf(read_gguf(resolve_model(args.model)))
        mbs = tokenize_throughput(tok, sample_text())
        print(f"tokenizer: {mbs:.2f} MB/s")
        return 0
    if args.concurrent > 0:
        from pyllama.cli.bench_concurrent import bench_concurrent

        return bench_concurrent(args)
    n_ctx = max(args.ctx_size, args.n_prompt + args.n_gen + 8)
    args.ctx_size = n_ctx
    model = load_model(args)
    log(f"loaded in {model.load_seconds:.2f} s, weights {model.weights} ({model.weights_nbytes / 2**20:.0f} MiB)")
    threads = args.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    results: list[dict[str, Any]] = []
    tests = ([("pp", args.n_prompt)] if args.n_prompt > 0 else []) + ([("tg", args.n_gen)] if args.n_gen > 0 else [])
    for kind, n in tests:
        fn = bench_pp if kind == "pp" else bench_tg
        fn(model, min(n, 8))  # warm-up
        speeds = [fn(model, n) for _ in range(max(1, args.repetitions))]
        results.append({
            "model": os.path.basename(model.path), "size_mib": model.gguf.file_size / 2**20,
            "params_m": sum(t.n_elements for t in model.gguf.tensors.values()) / 1e6,
            "weights": model.weights, "threads": threads, "test": f"{kind}{n}",
            "avg_ts": statistics.mean(speeds), "stddev_ts": statistics.stdev(speeds) if len(speeds) > 1 else 0.0,
            "samples_ts": speeds,
        })
    peak = peak_rss_mib()
    if args.output == "json":
        print(json.dumps({"results": results, "peak_rss_mib": peak}, indent=2))
        return 0
    print("| model | size | params | weights | threads | test | t/s |")
    print("| ----- | ---: | -----: | ------- | ------: | ---: | --: |")
    for r in results:
        print(f"| {r['model']} | {r['size_mib']:.2f} MiB | {r['params_m']:.2f} M | {r['weights']} | {r['threads']} "
              f"| {r['test']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    print(f"\npeak RSS: {peak:.0f} MiB")
    return 0
