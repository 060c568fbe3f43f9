"""Run under Pyodide by test_pyodide.py: the dequantizers and Linear on numpy 2.0.2 (wasm).

Prints one JSON line: platform, numpy version, backend and the failures found.
"""

import json
import sys

import numpy as np
from gguf import quants as gq
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from pyllama.gguf_file import TensorInfo
from pyllama.kernels.fast import FusedLinear
from pyllama.linear import DEFAULT_BACKEND, Linear
from pyllama.quant import PACK_LAYOUTS, SUPPORTED_TYPES, dequantize
from pyllama.quant import matmul as mm
from pyllama.quant.synthetic import random_tensor_bytes

rng = np.random.default_rng(0)
failures: list[str] = []
for qt in sorted(SUPPORTED_TYPES, key=lambda t: t.value):
    bs, ts = GGML_QUANT_SIZES[qt]
    for shape in [(3, bs * 2), (17, bs * 5)]:
        raw = random_tensor_bytes(rng, qt, shape)
        with np.errstate(all="ignore"):
            ref = np.asarray(gq.dequantize(raw.reshape(shape[0], -1), qt), dtype=np.float32).reshape(shape)
            got = dequantize(raw, qt, shape)
        if not np.array_equal(ref, got, equal_nan=True):
            failures.append(f"dequantize {qt.name} {shape}")
    if qt.name in ("F32", "BF16"):
        continue  # random bits include NaN/inf: matmul comparisons are meaningless
    shape = (40, bs * 4 if bs > 1 else 256)
    raw = random_tensor_bytes(rng, qt, shape)
    info = TensorInfo("w", qt, shape, 0, raw.size, raw)
    dense = Linear(info, "dense")
    for layout in PACK_LAYOUTS:
        for tile in (mm.TILE_WEIGHTS, 3000):
            saved, mm.TILE_WEIGHTS = mm.TILE_WEIGHTS, tile
            packed = Linear(info, "packed", layout=layout)  # type: ignore[arg-type]
            ids = np.array([3, 0, 39, 17], dtype=np.int64)  # wasm32: not the default intp
            if not np.array_equal(packed.rows(ids), dense.rows(ids)):
                failures.append(f"rows {qt.name} {layout} tile={tile}")
            for n_tokens in (1, 9):
                x = rng.standard_normal((n_tokens, shape[1])).astype(np.float32)
                yd, yp = dense(x), packed(x)
                if not np.allclose(yp, yd, rtol=1e-5, atol=1e-5 * float(np.abs(yd).max())):
                    failures.append(f"matmul {qt.name} {layout} tile={tile} L={n_tokens}")
            mm.TILE_WEIGHTS = saved
# Fused linears of mixed types (Q4_K_M style), with int64 row ids.
parts = []
for i, qt in enumerate((GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K, GGMLQuantizationType.F32)):
    raw = random_tensor_bytes(rng, qt, (8 + i, 256))
    if qt == GGMLQuantizationType.F32:  # finite values, unlike random F32 bits
        raw = rng.standard_normal((8 + i) * 256).astype(np.float32).view(np.uint8)
    parts.append(Linear(TensorInfo(f"p{i}", qt, (8 + i, 256), 0, raw.size, raw), "packed"))
x = rng.standard_normal((1, 256)).astype(np.float32)
want = np.concatenate([p(x) for p in parts], axis=1)
fused = FusedLinear(parts)
if not np.allclose(fused(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max())):
    failures.append("fused matmul")
ids = np.array([7, 0, 3], dtype=np.int64)
if not all(np.array_equal(p.rows(ids), p.dense_weight()[ids]) for p in parts):
    failures.append("fused rows")
print(json.dumps({"platform": sys.platform, "numpy": np.__version__, "backend": DEFAULT_BACKEND, "failures": failures}))
