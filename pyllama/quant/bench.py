"""Micro-benchmark of dequantization and of dense vs packed matmuls.

    python -m pyllama.quant.bench [--quick] [--json]

Prints, per ggml type, GB/s of *quantized weight bytes* turned into float32 by
`dequantize` (load path) and by the packed layout's `dequantize_into` (per-matmul
path), then dense vs packed matmul times on SmolLM2-135M-sized matrices with 1 and 64
input rows under both kernels. Runs unchanged under Pyodide, which is the point: the
numbers there decide the browser's defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from pyllama.quant import SUPPORTED_TYPES, PackLayout, dequantize, repack
from pyllama.quant.layout import PackedTensor
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, matmul_t
from pyllama.quant.synthetic import random_tensor_bytes

# SmolLM2-135M: hidden 576, FFN 1536, vocab 49152 (the tied lm-head), Q4_1 + Q8_0 embedding.
SMOLLM2_MATRICES = [(576, 1536), (1536, 576), (49152, 576)]


def best_ms(fn: Callable[[], object], min_time: float = 0.2, max_reps: int = 50) -> float:
    """Best of several runs (after one warm-up), in milliseconds."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def bench_dequantize(shape: tuple[int, int], min_time: float, layout: PackLayout = "int8") -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for qtype in sorted(SUPPORTED_TYPES, key=lambda t: t.value):
        raw = random_tensor_bytes(rng, qtype, shape)
        packed = repack(raw, qtype, shape, layout=layout)
        out = np.empty(shape, dtype=np.float32)
        out_t = np.empty(shape[::-1], dtype=np.float32)
        with np.errstate(all="ignore"):
            t_dense = best_ms(partial(dequantize, raw, qtype, shape), min_time)
            t_packed = best_ms(partial(packed.dequantize_into, out), min_time)
            t_packed_t = best_ms(partial(packed.dequantize_t_into, out_t), min_time)
        rows.append(
            {
                "type": qtype.name,
                "bits_per_weight": round(8 * GGML_QUANT_SIZES[qtype][1] / GGML_QUANT_SIZES[qtype][0], 2),
                "dequantize_GBps": round(raw.nbytes / t_dense / 1e6, 3),
                "packed_Gweights_per_s": round(out.size / t_packed / 1e6, 3),
                "packed_t_Gweights_per_s": round(out.size / t_packed_t / 1e6, 3),
                "packed_bytes_per_weight": round(packed.nbytes / out.size, 3),
            }
        )
    return rows


def _packed_matmul(p: PackedTensor, x: np.ndarray[Any, np.dtype[np.float32]], backend: MatmulBackend) -> None:
    y = np.empty((x.shape[0], p.shape[0]), dtype=np.float32)
    scratch = np.empty(p.scratch_size(), dtype=np.float32)
    p.matmul_t_into(x, y, scratch, backend)


def bench_matmul(
    qtypes: list[GGMLQuantizationType], n_tokens: list[int], min_time: float, layout: PackLayout = "int8"
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = []
    backends: list[MatmulBackend] = ["blas", "einsum"]
    for qtype in qtypes:
        for shape in SMOLLM2_MATRICES:
            if shape[1] % GGML_QUANT_SIZES[qtype][0]:
                continue  # e.g. K-quants need rows of 256: SmolLM2 itself cannot use them
            raw = random_tensor_bytes(rng, qtype, shape)
            dense = dequantize(raw, qtype, shape)
            packed = repack(raw, qtype, shape, layout=layout)
            for n in n_tokens:
                x = rng.standard_normal((n, shape[1])).astype(np.float32)
                for backend in backends:
                    t_dense = best_ms(partial(matmul_t, x, dense, backend=backend), min_time)
                    t_packed = best_ms(partial(_packed_matmul, packed, x, backend), min_time)
                    rows.append(
                        {
                            "type": qtype.name,
                            "shape": f"{shape[0]}x{shape[1]}",
                            "tokens": n,
                            "backend": backend,
                            "dense_ms": round(t_dense, 3),
                            "packed_ms": round(t_packed, 3),
                        }
                    )
    return rows


def bench_model(path: str, n_tokens: list[int], reps: int = 3) -> list[dict[str, Any]]:
    """Every 2-D weight of a GGUF file once per "token step", as a forward pass would.

    Unlike the single-matrix table, the weights do not stay in cache between calls, so
    this shows what memory traffic costs each layout. Attention, norms etc. not included.
    """
    from pyllama.gguf_file import read_gguf
    from pyllama.linear import Linear

    infos = [t for t in read_gguf(path).tensors.values() if len(t.shape) == 2]
    rows: list[dict[str, Any]] = []
    layouts: list[tuple[str, str, PackLayout]] = [("dense", "dense", "int8"), ("packed", "packed", "int8"),
                                                  ("compact", "packed", "compact")]
    for label, mode, layout in layouts:
        start = time.perf_counter()
        lins = [Linear(info, mode, layout=layout) for info in infos]  # type: ignore[arg-type]
        load_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        for n in n_tokens:
            xs = [rng.standard_normal((n, lin.n_in)).astype(np.float32) for lin in lins]

            def step(lins: list[Linear] = lins, xs: list[Any] = xs) -> None:
                for lin, x in zip(lins, xs, strict=True):
                    lin(x)

            t = best_ms(step, 0.0, reps)
            rows.append(
                {
                    "layout": label,
                    "tokens": n,
                    "ms_per_step": round(t, 1),
                    "weights_MB": round(sum(lin.nbytes for lin in lins) / 1e6, 1),
                    "load_s": round(load_s, 2),
                }
            )
        del lins
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pyllama.quant.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller tensors, fewer repetitions")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    ap.add_argument("--types", default="Q4_1,Q8_0,Q5_0,Q4_K", help="types for the matmul table")
    ap.add_argument("--tokens", default="1,64", help="input rows for the matmul table")
    ap.add_argument("--compact", action="store_true", help="smallest exact packed layouts (4-bit as nibbles)")
    ap.add_argument("--model", help="instead: time every 2-D weight of this GGUF per step, per layout")
    args = ap.parse_args(argv)
    if args.model:
        n_tokens = [int(n) for n in args.tokens.split(",") if n]
        res = bench_model(args.model, n_tokens)
        if args.json:
            print(json.dumps({"platform": sys.platform, "numpy": np.__version__, "model": res}))
            return
        print(f"platform {sys.platform}, numpy {np.__version__}, kernel {DEFAULT_BACKEND}: {args.model}")
        print(f"{'layout':8} {'L':>3} {'ms/step':>9} {'weights MB':>11} {'load s':>7}")
        for r in res:
            print(f"{r['layout']:8} {r['tokens']:3d} {r['ms_per_step']:9.1f} {r['weights_MB']:11.1f} {r['load_s']:7.2f}")
        return
    layout: PackLayout = "compact" if args.compact else "int8"
    min_time = 0.05 if args.quick else 0.3
    shape = (256, 2048) if args.quick else (2048, 2048)
    qtypes = [GGMLQuantizationType[name] for name in args.types.split(",") if name]
    n_tokens = [int(n) for n in args.tokens.split(",") if n]
    deq = bench_dequantize(shape, min_time, layout)
    mm = bench_matmul(qtypes, n_tokens, min_time, layout)
    if args.json:
        print(json.dumps({"platform": sys.platform, "numpy": np.__version__, "dequantize": deq, "matmul": mm}))
        return
    nib = ", compact packed layouts" if args.compact else ""
    print(f"platform {sys.platform}, numpy {np.__version__}; dequantize {shape[0]}x{shape[1]}{nib}")
    print("dequantize: load path, GB/s of quantized bytes; packed: its layout into W (rows) and W.T")
    print(f"{'type':8} {'bpw':>5} {'dequantize GB/s':>16} {'packed Gw/s':>12} {'W.T Gw/s':>9} {'packed B/w':>10}")
    for r in deq:
        print(
            f"{r['type']:8} {r['bits_per_weight']:5.2f} {r['dequantize_GBps']:16.3f}"
            f" {r['packed_Gweights_per_s']:12.3f} {r['packed_t_Gweights_per_s']:9.3f} {r['packed_bytes_per_weight']:10.3f}"
        )
    print(f"\n{'type':6} {'matrix':>10} {'L':>3} {'kernel':>7} {'dense ms':>9} {'packed ms':>10}")
    for r in mm:
        print(
            f"{r['type']:6} {r['shape']:>10} {r['tokens']:3d} {r['backend']:>7}"
            f" {r['dense_ms']:9.3f} {r['packed_ms']:10.3f}"
        )


if __name__ == "__main__":
    main()
