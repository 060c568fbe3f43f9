"""KV cache element types: q8_0 blocks bit-exact with ggml, and its perplexity cost on SmolLM2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from pyllama.cli.perplexity import perplexity
from pyllama.engine import Model
from pyllama.errors import InvalidRequestError
from pyllama.kv_cache import CACHE_TYPE_BYTES, KVCache, quantize_q8_0
from tests.conftest import GOLDEN


def test_q8_0_blocks_are_ggmls() -> None:
    x = (np.random.default_rng(0).standard_normal((6, 64)) * 3).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block (d = 0)
    x[1, 5] = 127.5 * (np.abs(x[1, :32]).max() / 127)  # a value landing on .5 after scaling
    q, d = quantize_q8_0(x)
    ref = quantize(x, GGMLQuantizationType.Q8_0).reshape(6, 2, 34)
    assert np.array_equal(d.view(np.uint8).reshape(6, 2, 2), ref[:, :, :2])
    assert np.array_equal(q.reshape(6, 2, 32).view(np.uint8), ref[:, :, 2:])


def test_q8_0_cache_roundtrip_copy_shift_and_state() -> None:
    kv = KVCache(1, 2, 16, 2, 32, 32, "q8_0", "q8_0")
    rng = np.random.default_rng(1)
    k = rng.standard_normal((10, 2, 32)).astype(np.float32)
    v = rng.standard_normal((10, 2, 32)).astype(np.float32)
    kv.reserve(0, 0, 10)
    kv.write(0, 0, 0, k, v)
    kv.commit(0, 10)
    got = kv.keys(0, 0, 10).transpose(1, 0, 2)
    assert got.shape == k.shape and float(np.abs(got - k).max()) < 0.02
    kv.copy(0, 1)
    assert np.array_equal(kv.values(0, 1, 10), kv.values(0, 0, 10))
    ks, vs = kv.seq_state(0)
    kv.clear(1)
    kv.set_seq_state(1, ks, vs)
    assert np.array_equal(kv.keys(0, 1, 10), kv.keys(0, 0, 10))  # q8_0 re-quantizes to itself
    before = kv.values(0, 0, 10).copy()
    kv.shift(0, 2, 3, lambda layer, keys, delta: keys)
    assert kv.length(0) == 7 and np.array_equal(kv.values(0, 0, 7)[:, 2:], before[:, 5:])


def test_memory_per_token() -> None:
    for kind, nbytes in CACHE_TYPE_BYTES.items():
        kv = KVCache(3, 1, 8, 2, 64, 64, kind, kind)
        assert kv.bytes_per_token == round(3 * 2 * (2 * 64) * nbytes)
    assert KVCache(1, 1, 8, 1, 64, 64, "q8_0", "q8_0").nbytes * 32 == KVCache(1, 1, 8, 1, 64, 64, "f32", "f32").nbytes * 8.5


def test_bad_cache_types() -> None:
    with pytest.raises(InvalidRequestError, match="supported: f32, f16, q8_0"):
        KVCache(1, 1, 8, 1, 32, 32, "q4_0", "f16")
    with pytest.raises(InvalidRequestError, match="divisible by 32"):
        KVCache(1, 1, 8, 1, 16, 16, "q8_0", "q8_0")


@pytest.mark.parity
@pytest.mark.slow
def test_q8_0_cache_keeps_smollm2_perplexity(smollm2_path: Path) -> None:
    """Two of the text's four chunks (one alone is too noisy: 63 scored tokens). Measured on
    all four: f16 24.81, q8_0 24.76 (-0.22%); llama.cpp's own: 24.87 vs 24.95 (+0.30%).

    The ratio is noisy at the 1% level: activation and cache quantization round chaotically,
    so BLAS's thread count alone moves it (fast path, four chunks: +0.1% with 1 thread,
    +1.2% with 2; the earlier float32 path: -1.0% with 2). A broken q8_0 cache costs far
    more than the 2.5% allowed here."""
    text = (GOLDEN / "ppl_text.txt").read_text()
    model = Model.load(smollm2_path, n_ctx=128, weights="dense", cache_type_k="f16", cache_type_v="f16")
    tokens = model.tokenizer.tokenize(text, add_special=True, parse_special=False)
    cfg = model.config
    ppl = {}
    for kind in ("f16", "q8_0"):
        # Same weights, fresh cache of the type under test (saves a second load).
        model.net.kv = KVCache(cfg.n_layer, 1, 128, cfg.n_head_kv, cfg.head_dim, cfg.head_dim_v, kind, kind)
        ppl[kind] = perplexity(model, tokens, 128, None, n_chunks=2)[0]
    print(f"SmolLM2 perplexity (-c 128, 2 chunks): {ppl}")
    assert abs(ppl["q8_0"] / ppl["f16"] - 1.0) < 0.025, ppl


def test_widened_f16_cache_holds_the_f16_values_in_float32() -> None:
    """Fast numerics hold an f16 cache as float32 (reads are views, no per-token conversion)
    but every value is the float16-rounded one: identical reads, shifts and slot states."""
    rng = np.random.default_rng(2)
    k = (rng.standard_normal((10, 2, 32)) * 5).astype(np.float32)
    v = (rng.standard_normal((10, 2, 32)) * 5).astype(np.float32)
    caches = [KVCache(1, 2, 16, 2, 32, 32, "f16", "f16", widen_f16=w) for w in (False, True)]
    for kv in caches:
        kv.reserve(0, 0, 10)
        kv.write(0, 0, 0, k, v)
        kv.commit(0, 10)
    plain, wide = caches
    assert plain.k[0].q.dtype == np.float16 and wide.k[0].q.dtype == np.float32
    assert wide.nbytes == 2 * plain.nbytes
    assert np.array_equal(wide.keys(0, 0, 10), plain.keys(0, 0, 10))
    assert np.array_equal(wide.values(0, 0, 10), v.astype(np.float16).astype(np.float32).transpose(1, 0, 2))
    assert np.shares_memory(wide.keys(0, 0, 10), wide.k[0].q)  # a view: attention copies nothing
    for a, b in zip(wide.seq_state(0), plain.seq_state(0), strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for kv in caches:
        kv.shift(0, 2, 3, lambda layer, keys, delta: keys * np.float32(1.0001))
    assert np.array_equal(wide.keys(0, 0, 7), plain.keys(0, 0, 7))


def test_fast_and_exact_models_allocate_their_cache_types(smollm2_path: Path) -> None:
    fast = Model.load(smollm2_path, n_ctx=64, weights="packed")
    assert fast.kv.k[0].q.dtype == np.float32 and fast.kv.type_k == "f16"
    exact = Model.load(smollm2_path, n_ctx=64, weights="packed", numerics="exact")
    assert exact.kv.k[0].q.dtype == np.float16
