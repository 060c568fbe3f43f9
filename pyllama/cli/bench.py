"""`pyllama bench`: llama-bench's pp/tg measurements, printed in its table shape.

pp N: one forward pass over N prompt tokens from an empty cache; tg N: N single-token
steps (greedy, as llama-bench decodes without a sampler). Each test runs -r times after a
short warm-up; we print mean +/- stddev tokens/second (llama-bench's columns), keep the
median and the samples in the JSON, and the peak RSS. The context (-c) defaults to -p + -n,
as llama-bench sizes it, so the KV cache in the peak RSS is what the test needs.

-d N (llama-bench's --n-depth) fills the cache with N tokens before each test, untimed,
so "tg32 @ d1500" is decoding with 1500 tokens of context, where attention's reads of the
cache add to the weights'.

--vs LLAMA_BENCH runs llama.cpp's llama-bench on the same file in alternation and prints
both medians and their ratio; --profile breaks one prompt pass and the decode steps down by
op category and by layer; --roofline compares tg with the bound bytes/token / copy bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

from pyllama.cli.bench_vs import parse_test_name, test_name
from pyllama.cli.blas_threads import get_threads, set_threads
from pyllama.cli.common import CliError, add_model_args, guarded, load_model, log, resolve_model
from pyllama.engine import Model
from pyllama.profiling import CATEGORIES, profile_model


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="prompt/generation speed (llama-bench)", description=__doc__)
    add_model_args(p, ctx_default=-1)  # -1: -p + -n, as llama-bench sizes its context
    p.add_argument("-p", "--n-prompt", type=int, default=64, help="prompt tokens (0 = skip pp)")
    p.add_argument("-n", "--n-gen", type=int, default=32, help="generated tokens (0 = skip tg)")
    p.add_argument("-d", "--n-depth", type=int, default=0, help="tokens already in the cache before each test (untimed)")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, default=None, help="BLAS threads (default: OpenBLAS's own)")
    p.add_argument("-o", "--output", choices=["md", "json"], default="md")
    p.add_argument("--vs", metavar="LLAMA_BENCH", help="also run this llama-bench executable, alternating, and print ratios")
    p.add_argument("--profile", action="store_true", help="time per op category and per layer (pp and tg)")
    p.add_argument("--roofline", action="store_true", help="measure copy bandwidth and the tg bound of this layout")
    p.add_argument("--tokenizer", action="store_true", help="measure tokenizer throughput (MB/s) instead")
    p.add_argument("--concurrent", type=int, default=0, metavar="N",
                   help="continuous batching: N greedy requests of -n tokens on N slots vs one alone")
    p.set_defaults(func=guarded(main))


def peak_rss_mib() -> float | None:
    """Peak resident memory; None where there is no `resource` module (Pyodide, Windows)."""
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if platform.system() != "Darwin" else r / 2**20


def _tokens(model: Model, n: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(0).integers(0, model.n_vocab, n)]


def _fill(model: Model, depth: int) -> None:
    """An empty cache, then `depth` tokens in it (untimed context for the test)."""
    model.kv.clear(0)
    if depth > 0:
        model.eval_prompt(_tokens(model, depth + 1)[1:], 0, 0)


def bench_pp(model: Model, n: int, depth: int = 0) -> float:
    tokens = _tokens(model, n)
    _fill(model, depth)
    t0 = time.perf_counter()
    model.eval_prompt(tokens, 0, depth)
    return n / (time.perf_counter() - t0)


def bench_tg(model: Model, n: int, depth: int = 0) -> float:
    _fill(model, depth)
    model.eval_prompt([1], 0, depth)
    token = 1
    t0 = time.perf_counter()
    for _ in range(n):
        logits = model.eval_prompt([token], 0)
        token = int(np.argmax(logits))
    return n / (time.perf_counter() - t0)


def run_test(model: Model, kind: str, n: int, depth: int = 0) -> float:
    return bench_pp(model, n, depth) if kind == "pp" else bench_tg(model, n, depth)


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (("-p", args.n_prompt), ("-n", args.n_gen), ("-d", args.n_depth)):
        if value < 0:
            raise CliError(f"{flag} must be >= 0, got {value}")
    if args.repetitions < 1:
        raise CliError(f"-r must be >= 1, got {args.repetitions}")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"-t must be >= 1, got {args.threads}")
    if args.n_prompt == 0 and args.n_gen == 0:
        raise CliError("nothing to measure: -p and -n are both 0")
    if args.vs and not (os.path.isfile(args.vs) and os.access(args.vs, os.X_OK)):
        raise CliError(f"--vs {args.vs}: not an executable file")


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
    _check_args(args)
    if args.threads is not None and not set_threads(args.threads):
        actual = get_threads()
        log(f"note: -t {args.threads}: " + ("NumPy here has no OpenBLAS to set the thread count of" if actual is None
                                           else f"OpenBLAS runs {actual} threads (its limit on this machine)"))
    threads = get_threads() or args.threads or 1
    need = args.n_depth + args.n_prompt + args.n_gen + 8
    args.ctx_size = need if args.ctx_size < 0 else max(args.ctx_size, need) if args.ctx_size > 0 else 0
    model = load_model(args)
    log(f"loaded in {model.load_seconds:.2f} s, weights {model.weights} ({model.weights_nbytes / 2**20:.0f} MiB), "
        f"{threads} BLAS thread(s)")
    tests = ([("pp", args.n_prompt)] if args.n_prompt > 0 else []) + ([("tg", args.n_gen)] if args.n_gen > 0 else [])
    depth = args.n_depth
    for kind, n in tests:
        run_test(model, kind, min(n, 8))  # warm-up
    out: dict[str, Any] = {"threads": threads, "weights": model.weights, "numerics": args.numerics, "n_ctx": model.n_ctx,
                           "load_seconds": model.load_seconds}
    if args.vs:
        from pyllama.cli.bench_vs import compare, print_comparison

        c = compare(args.vs, str(model.path), tests, args.repetitions, threads, lambda k, n: run_test(model, k, n, depth),
                    depth)
        out["comparison"] = c.rows()
        samples = {r["test"]: r["pyllama_samples_ts"] for r in out["comparison"]}
    else:
        samples = {test_name(k, n, depth): [run_test(model, k, n, depth) for _ in range(args.repetitions)] for k, n in tests}
    out["results"] = [result_row(model, args, threads, test, s) for test, s in samples.items()]
    out["peak_rss_mib"] = peak_rss_mib()  # before --roofline's 512 MiB copy buffers
    if args.roofline:
        out["roofline"] = roofline(model, samples)
    if args.profile:
        out["profile"] = profile_model(model, args.n_prompt or 64, args.n_gen or 16)
    if args.output == "json":
        print(json.dumps(out, indent=2))
        return 0
    print_results(out["results"])
    if args.vs:
        print()
        print_comparison(out["comparison"], str(model.path), model.weights, threads)
    if args.roofline:
        print_roofline(out["roofline"])
    if args.profile:
        print_profile(out["profile"])
    if out["peak_rss_mib"] is not None:
        print(f"\npeak RSS: {out['peak_rss_mib']:.0f} MiB")
    return 0


def result_row(model: Model, args: argparse.Namespace, threads: int, test: str, speeds: list[float]) -> dict[str, Any]:
    kind, n, depth = parse_test_name(test)
    return {
        "model": os.path.basename(model.path), "size_mib": model.gguf.file_size / 2**20,
        "params_m": sum(t.n_elements for t in model.gguf.tensors.values()) / 1e6,
        "weights": model.weights, "numerics": args.numerics, "threads": threads, "test": test,
        "n_prompt": n if kind == "pp" else 0, "n_gen": n if kind == "tg" else 0, "n_depth": depth,
        "avg_ts": statistics.mean(speeds), "stddev_ts": statistics.stdev(speeds) if len(speeds) > 1 else 0.0,
        "median_ts": statistics.median(speeds), "samples_ts": speeds,
    }


def print_results(results: list[dict[str, Any]]) -> None:
    print("| model | size | params | weights | threads | test | t/s |")
    print("| ----- | ---: | -----: | ------- | ------: | ---: | --: |")
    for r in results:
        print(f"| {r['model']} | {r['size_mib']:.2f} MiB | {r['params_m']:.2f} M | {r['weights']} | {r['threads']} "
              f"| {r['test']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")


def roofline(model: Model, samples: dict[str, list[float]]) -> dict[str, Any]:
    """Bytes/token of this layout vs NumPy copy bandwidth: the tg ceiling and how close we are."""
    from pyllama.memory import copy_bandwidth, weight_bytes_per_token

    bw = copy_bandwidth()
    per_token = weight_bytes_per_token(model.gguf, model.weights)
    bound = bw / per_token
    tg = [statistics.median(s) for t, s in samples.items() if t.startswith("tg")]
    return {
        "copy_gbs": bw / 1e9, "bytes_per_token": per_token, "bound_ts": bound,
        "tg_ts": tg[0] if tg else None, "fraction_of_bound": tg[0] / bound if tg else None,
    }


def print_roofline(r: dict[str, Any]) -> None:
    print(f"\nroofline: copy bandwidth {r['copy_gbs']:.1f} GB/s, {r['bytes_per_token'] / 1e6:.0f} MB/token "
          f"-> bound {r['bound_ts']:.1f} t/s" + (
              f"; tg {r['tg_ts']:.2f} t/s = {100 * r['fraction_of_bound']:.0f}% of bound" if r["tg_ts"] else ""))


def print_profile(prof: dict[str, Any]) -> None:
    pp, tg = prof["pp"], prof["tg"]
    print(f"\nprofile: pp{pp['n_tokens']} ({pp['ms_per_token']:.2f} ms/token), "
          f"tg{tg['n_tokens']} with sampling ({tg['ms_per_token']:.2f} ms/token)")
    print("| category | pp ms/token | pp % | tg ms/token | tg % |")
    print("| -------- | ----------: | ---: | ----------: | ---: |")
    for c in CATEGORIES:
        a, b = pp["categories"][c], tg["categories"][c]
        print(f"| {c} | {a['ms_per_token']:.3f} | {a['percent']:.1f} | {b['ms_per_token']:.3f} | {b['percent']:.1f} |")
    for name, d in (("pp", pp), ("tg", tg)):
        layers = d["layers_ms_per_token"]
        if layers:
            slow = max(range(len(layers)), key=layers.__getitem__)
            print(f"{name} per layer: mean {statistics.mean(layers):.3f} ms/token, min {min(layers):.3f}, "
                  f"max {layers[slow]:.3f} (layer {slow}), {len(layers)} layers = "
                  f"{100 * sum(layers) / d['ms_per_token']:.0f}% of the step")
    sys.stdout.flush()
