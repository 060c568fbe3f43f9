"""The fast-numerics kernels (pyllama/models/fastpath.py) against the reference ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize

from pyllama import numerics
from pyllama.config import RopeParams
from pyllama.engine import Model
from pyllama.exact_matmul import GgmlLinear
from pyllama.gguf_file import TensorInfo
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
from pyllama.models import Batch, SeqChunk
from pyllama.models import fastpath as fp
from pyllama.ops import RopeTable, attention
from pyllama.quant.layout import RowRange
from tests.models import synth

T = GGMLQuantizationType
f32 = np.float32


def linear(name: str, qtype: GGMLQuantizationType, n_out: int, n_in: int, seed: int, mode: str = "dense") -> GgmlLinear:
    w = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(f32)
    raw = quantize(w, qtype).reshape(-1).view(np.uint8)
    return GgmlLinear(TensorInfo(name, qtype, (n_out, n_in), 0, raw.size, raw), mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_1, T.Q4_K, T.F16, T.F32])
def test_activation_quantization_matches_ggml_rounding(qtype: GGMLQuantizationType) -> None:
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(f32) * 4
    x[1, :32] = 0.0  # an all-zero block stays zero
    want, _ = numerics.act_quant_dequant(x, qtype)
    kind = "f16" if qtype == T.F16 else numerics.VEC_DOT_TYPE.get(qtype)
    got = fp.quantize_activations(x, kind)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["dense", "redequantized", "packed"])
def test_fused_linear_equals_its_parts(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`redequantized`: dense parts rebuilt from the file bytes (what big heads do)."""
    if mode == "redequantized":
        monkeypatch.setattr(fp, "REDEQUANT_BYTES", 0)
        mode = "dense"
    parts = [linear(f"blk.0.attn_{n}.weight", T.Q4_1, o, 64, i, mode) for i, (n, o) in enumerate([("q", 64), ("k", 32), ("v", 32)])]
    bias = np.arange(32, dtype=f32)
    originals = [p.dense_weight().copy() for p in parts]
    fused = fp.FusedLinear(parts, [None, bias, None])
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(f32)
    xq = fp.quantize_activations(x, "q8_1")
    xin = xq if fp.ROUND_ACTIVATIONS else x  # fast numerics multiply float32 inputs as they are
    want = np.concatenate(originals) @ xin.T
    want[64:96] += bias[:, None]
    np.testing.assert_allclose(fused(x), want.T, rtol=1e-5, atol=1e-4)
    if mode == "dense":  # the parts now share the fused matrix: no second copy
        whole = fused.wt if fused.wt is not None else fused.weight
        assert whole is not None
        assert all(p.weight is not None and np.shares_memory(p.weight, whole) for p in parts)
    else:  # one repacked tensor; each part keeps a row view of it
        assert fused.packed is not None and all(isinstance(p.packed, RowRange) for p in parts)
    for p, w in zip(parts, originals, strict=True):  # the parts still work on their own (exact path)
        np.testing.assert_array_equal(p.dense_weight(), w)
        np.testing.assert_array_equal(p.rows(np.array([3, 0])), w[[3, 0]])
        np.testing.assert_allclose(Linear.__call__(p, xq), xq @ w.T, rtol=1e-5, atol=1e-4)


def test_fused_linear_with_mixed_activation_types() -> None:
    parts = [linear("blk.0.attn_q.weight", T.Q4_1, 16, 256, 1), linear("blk.0.attn_v.weight", T.Q8_0, 16, 256, 2)]
    x = np.random.default_rng(7).standard_normal((2, 256)).astype(f32)
    y = fp.FusedLinear(parts)(x)
    for p, part_y in zip(parts, np.split(y, [16], axis=1), strict=True):
        xq = fp.quantize_activations(x, fp._act_kind(p)) if fp.ROUND_ACTIVATIONS else x
        np.testing.assert_allclose(part_y, xq @ p.dense_weight().T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("neox", [False, True])
def test_fast_rope_equals_the_table(neox: bool) -> None:
    rope = RopeParams(n_rot=16, freq_base=10000.0, freq_scale=1.0, n_ctx_orig=64, neox=neox)
    table = RopeTable(rope, 64)
    x = np.random.default_rng(3).standard_normal((5, 3, 16)).astype(f32)
    pos = np.array([0, 1, 7, 30, 63], dtype=np.int64)
    want = table.apply(x.copy(), pos)
    got = x.copy()
    fp.FastRope(table).apply(got, pos)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def reference_attention(kv: KVCache, layer: int, seq: int, q: np.ndarray, window: int) -> np.ndarray:
    end = kv.length(seq)
    pos = np.arange(end - q.shape[0], end, dtype=np.int64)
    return attention(q, kv.keys(layer, seq, end), kv.values(layer, seq, end), pos, np.arange(end), 0.25, window=window)


@pytest.mark.parametrize("window", [0, 3])
def test_attention_plan_prompts_and_batched_decode(window: int) -> None:
    """A prompt chunk, then one decode row from each of three sequences of different lengths
    (one batched attention over the padded cache), against ops.attention per sequence."""
    rng = np.random.default_rng(11)
    h, hkv, dh = 4, 2, 32
    kv = KVCache(1, 3, 16, hkv, dh, dh, "f32", "f32")

    def rows(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (rng.standard_normal((n, h, dh)).astype(f32), rng.standard_normal((n, hkv, dh)).astype(f32),
                rng.standard_normal((n, hkv, dh)).astype(f32))

    lengths = [6, 2, 9]
    for seq, n in enumerate(lengths):  # prompts, one sequence per batch
        q, k, v = rows(n)
        plan = fp.AttentionPlan(kv, Batch([SeqChunk(seq, [1] * n, 0, "last")]))
        got = plan.attend(0, q, k, v, 0.25, window=window)
        kv.commit(seq, n)
        np.testing.assert_allclose(got, reference_attention(kv, 0, seq, q, window), rtol=1e-5, atol=1e-5)
    q, k, v = rows(3)
    plan = fp.AttentionPlan(kv, Batch([SeqChunk(s, [1], lengths[s], "last") for s in (0, 1, 2)]))
    assert plan.batched
    got = plan.attend(0, q, k, v, 0.25, window=window)
    for s in range(3):
        kv.commit(s, lengths[s] + 1)
        want = reference_attention(kv, 0, s, q[s : s + 1], window)
        np.testing.assert_allclose(got[s : s + 1], want, rtol=1e-5, atol=1e-5)
    # Sequences 0 and 2 together, then 2 alone: with a window, both rows are past it, so the
    # batched path reads only from the first key either can see (positions 5.. and 9..).
    for seqs in ((0, 2), (2,)):
        q, k, v = rows(len(seqs))
        plan = fp.AttentionPlan(kv, Batch([SeqChunk(s, [1], kv.length(s), "last") for s in seqs]))
        got = plan.attend(0, q, k, v, 0.25, window=window)
        for i, s in enumerate(seqs):
            kv.commit(s, kv.length(s) + 1)
            want = reference_attention(kv, 0, s, q[i : i + 1], window)
            np.testing.assert_allclose(got[i : i + 1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gemma3", "qwen2", "qwen3", "phi3", "mixtral", "gemma", "gemma2"])
def test_batched_decode_equals_one_sequence_at_a_time(name: str, tmp_path: Path) -> None:
    """Fast mode: three slots decoding together give the rows each gives alone."""
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    model = Model.load(path, weights="dense", n_ctx=3 * synth.N_CTX, n_seq=3, cache_type_k="f32", cache_type_v="f32")
    assert not numerics.EXACT
    p = synth.PROMPT
    for s, n in enumerate([5, 9, 13]):
        model.eval_prompt(p[:n], s)
    together = model.decode(Batch([SeqChunk(s, [p[20 + s]], model.kv.length(s), "last") for s in range(3)]))
    alone = []
    for s, n in enumerate([5, 9, 13]):
        model.kv.truncate(s, n)
        alone.append(model.eval_prompt([p[20 + s]], s))
    np.testing.assert_allclose(together, np.stack(alone), rtol=1e-4, atol=1e-4)


def test_released_file_pages_read_back_unchanged(tmp_path: Path) -> None:
    """release_file_pages drops a tensor's mapped pages; reading them again gives the same bytes."""
    from pyllama.models.base import release_file_pages

    raw = np.random.default_rng(0).integers(0, 256, size=5 * 4096 + 123, dtype=np.uint8)
    (tmp_path / "blob").write_bytes(raw.tobytes())
    mapped = np.memmap(tmp_path / "blob", dtype=np.uint8, mode="r")
    view = mapped[1000 : 1000 + 3 * 4096]
    release_file_pages(view)
    release_file_pages(np.asarray(view)[::2])  # not contiguous: ignored
    release_file_pages(raw[10:20])  # not a mapped file: ignored
    np.testing.assert_array_equal(view, raw[1000 : 1000 + 3 * 4096])
    np.testing.assert_array_equal(mapped, raw)


@pytest.mark.parametrize(("name", "fast"), [("qwen2", True), ("qwen3", True), ("phi3", True), ("mixtral", True),
                                            ("gemma", True), ("gemma2", True), ("granite", False)])
def test_llama_shaped_architectures_take_the_fast_path(name: str, fast: bool, tmp_path: Path) -> None:
    """Qwen 2/3, Phi-3, Llama MoE and Gemma 1/2 run the fused block in fast numerics (granite's
    multipliers keep the per-op code), and the fused block gives the per-op block's rows."""
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    model = Model.load(path, weights="dense", n_ctx=synth.N_CTX, cache_type_k="f32", cache_type_v="f32")
    net: Any = model.net
    assert (net.fast is not None) == fast
    batch = Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")])
    fused = model.decode(batch)
    if fast:
        net.fast, keep = None, net.fast
        net.fast_path = False  # the same weights through the per-op block code
        model.kv.clear()
        per_op = model.decode(batch)
        net.fast, net.fast_path = keep, True
        # Summation order only; Gemma 2's soft-capped attention amplifies it most (fused
        # 1.5e-4 from llama.cpp's logits, per-op 4.9e-4; the others ~2e-6 either way).
        np.testing.assert_allclose(fused, per_op, rtol=1e-3, atol=1e-3)
