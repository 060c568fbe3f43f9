"""Per-token model-thread cost of the sampler chain for worst-case legal requests.

`python scripts/bench_samplers.py [-m MODEL.gguf] [--cases dry,infill,...] [-n 20]`
(run with OPENBLAS_NUM_THREADS=1). Each case builds a Sampler over the model's real
vocabulary the way the scheduler does (token pieces with specials rendered), feeds it a
history of accepted tokens, then times sample() + accept() on random logits. Prints the
median and worst milliseconds per token. docs/performance.md keeps the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import pyllama
from pyllama.gguf_file import read_gguf
from pyllama.model_files import default_model_path
from pyllama.sampling.params import SamplingParams
from pyllama.sampling.sampler import Sampler
from pyllama.tokenizer import Tokenizer

BREAKERS = [f"{i:02d} breaker string that is forty bytes long"[:40] for i in range(32)]


def _params(**kw: Any) -> SamplingParams:
    p = SamplingParams()
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def cases(n_ctx: int) -> dict[str, tuple[SamplingParams, int]]:
    """name -> (params, history length fed through accept before timing)."""
    dry = {"dry_multiplier": 0.8, "dry_allowed_length": 1, "dry_penalty_last_n": -1,
           "dry_sequence_breakers": BREAKERS, "seed": 1}
    return {
        "greedy": (_params(temperature=0.0, samplers=["top_k", "temperature"]), 256),
        "default": (_params(seed=1), 256),
        "dry": (_params(**dry, samplers=["dry", "top_k", "temperature"]), n_ctx),
        "dry-new-breakers": (_params(**{**dry, "dry_sequence_breakers": [b[::-1] for b in BREAKERS]},
                                     samplers=["dry", "top_k", "temperature"]), n_ctx),
        "dry-x32": (_params(**dry, samplers=["dry"] * 32), n_ctx),
        # ignore_eos: EOG tokens at -inf, so infill always merges (else it often keeps only EOG)
        "infill": (_params(seed=1, ignore_eos=True, samplers=["infill", "top_k", "temperature"]), 64),
        "penalties": (_params(seed=1, repeat_last_n=-1, repeat_penalty=1.1, frequency_penalty=0.5,
                              presence_penalty=0.5, samplers=["penalties"] * 32), n_ctx),
        "logit-bias": (_params(seed=1, logit_bias=[(t, 0.5) for t in range(0, 49152, 3)],
                               samplers=["top_k", "temperature"]), 64),
        "typical-x32": (_params(seed=1, typical_p=0.99999, samplers=["typ_p"] * 32), 64),
        "top-n-sigma-x32": (_params(seed=1, top_n_sigma=100.0, samplers=["top_n_sigma"] * 32), 64),
        "xtc-x32": (_params(seed=1, xtc_probability=1.0, xtc_threshold=1e-9, samplers=["xtc"] * 32), 64),
        "dynatemp-x32": (_params(seed=1, dynatemp_range=1.0, samplers=["temperature"] * 32), 64),
        "top-p-x32": (_params(seed=1, top_p=0.99999, samplers=["top_p"] * 32), 64),
        "min-p-x32": (_params(seed=1, min_p=1e-30, samplers=["min_p"] * 32), 64),
        "mirostat": (_params(seed=1, mirostat=1), 64),
        "mirostat2": (_params(seed=1, mirostat=2), 64),
        "adaptive-p": (_params(seed=1, adaptive_target=0.5, samplers=["adaptive_p"]), 64),
    }


def _time(fn: Callable[[], None], n: int) -> list[float]:
    """CPU milliseconds of this thread per call: what the model thread spends, whatever
    else the machine runs (wall time on a shared machine mostly measures the others)."""
    out = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()
        out.append((time.thread_time() - t0) * 1000)
    return out


def _stepper(s: Sampler, logits: list[np.ndarray], feed: list[int] | None) -> Callable[[], None]:
    """One token: sample from the next logits row, accept the sample (or the next fed token)."""
    k = [0]

    def step() -> None:
        token = s.sample(logits[k[0] % len(logits)])
        s.accept(feed[k[0] % len(feed)] if feed else token)
        k[0] += 1

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-n", type=int, default=20, help="timed tokens per case")
    ap.add_argument("-c", "--ctx", type=int, default=2048, help="slot context (history for the -1 cases)")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    path = args.model or default_model_path()
    tok = Tokenizer.from_gguf(read_gguf(path))
    print(f"pyllama from {Path(pyllama.__file__).parent}, {args.ctx}-token context")
    pieces = tok.pieces_bytes()
    eog = frozenset(tok.eog_ids)
    rng = np.random.default_rng(0)
    text = "The lighthouse keeper climbed the stairs. " * 1000  # ~9,000 tokens, repetitive
    history = tok.tokenize(text, add_special=False)
    table = cases(args.ctx)
    names = [c for c in args.cases.split(",") if c] or list(table)
    for name in names:
        params, n_hist = table[name]
        t0 = time.thread_time()
        s = Sampler(params, len(pieces), eog_ids=eog, token_pieces=pieces, n_ctx=args.ctx)
        build = (time.thread_time() - t0) * 1000
        s.accept_prompt(history[: n_hist - 1])
        logits = [rng.normal(0, 3, len(pieces)).astype(np.float32) for _ in range(4)]
        feed = history[n_hist:] if name.startswith("dry") else None  # DRY: keep the text repetitive
        step = _stepper(s, logits, feed)
        ms = _time(step, args.n)
        print(f"{name:16s} build {build:8.1f} ms CPU   per token median {statistics.median(ms):8.2f} ms"
              f"   max {max(ms):8.2f} ms")


if __name__ == "__main__":
    main()
