"""The kernel sets (pyllama/kernels): fast's fused pieces against the reference ones, every
architecture through both sets, and two models of different numerics side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize

from pyllama.config import RopeParams
from pyllama.engine import Model
from pyllama.gguf_file import TensorInfo
from pyllama.kernels import fast as fp
from pyllama.kernels.fast_attention import AttentionPlan
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
from pyllama.models import Batch, SeqChunk
from pyllama.ops import RopeTable, attention
from pyllama.quant.layout import RowRange
from tests.models import synth

T = GGMLQuantizationType
f32 = np.float32
DECODERS = ["llama", "gemma3", "qwen2", "qwen3", "phi3", "mixtral", "gemma", "gemma2", "granite", "gpt2",
            "starcoder2", "olmo2"]


def linear(name: str, qtype: GGMLQuantizationType, n_out: int, n_in: int, seed: int, mode: str = "dense") -> Linear:
    w = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(f32)
    raw = quantize(w, qtype).reshape(-1).view(np.uint8)
    return Linear(TensorInfo(name, qtype, (n_out, n_in), 0, raw.size, raw), mode)  # type: ignore[arg-type]


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
    want = np.concatenate(originals) @ x.T  # fast numerics multiply float32 inputs as they are
    want[64:96] += bias[:, None]
    np.testing.assert_allclose(fused(x), want.T, rtol=1e-5, atol=1e-4)
    if mode == "dense":  # the parts now share the fused matrix: no second copy
        whole = fused.wt if fused.wt is not None else fused.weight
        assert whole is not None
        assert all(p.weight is not None and np.shares_memory(p.weight, whole) for p in parts)
    else:  # one repacked tensor; each part keeps a row view of it
        assert fused.packed is not None and all(isinstance(p.packed, RowRange) for p in parts)
    for p, w in zip(parts, originals, strict=True):  # the parts still work on their own (tied heads)
        np.testing.assert_array_equal(p.dense_weight(), w)
        np.testing.assert_array_equal(p.rows(np.array([3, 0])), w[[3, 0]])
        np.testing.assert_allclose(p(x), x @ w.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [2, 3])
def test_two_and_three_rows_equal_each_row_alone(rows: int) -> None:
    """Decode steps of 2-3 slots run one gemv per row (GEMV_ROWS): each row's result is then
    bit for bit its one-row result, and the call takes the gemv path, not sgemm's."""
    parts = [linear("blk.0.ffn_up.weight", T.Q4_1, 384, 128, 3)]
    fused = fp.FusedLinear(parts)
    assert fused.wt is not None and rows <= fp.GEMV_ROWS
    x = np.random.default_rng(9).standard_normal((rows, 128)).astype(f32)
    together = fused(x)
    for i in range(rows):
        np.testing.assert_array_equal(together[i], fused(x[i : i + 1])[0])


@pytest.mark.parametrize("mode", ["dense", "packed"])
def test_fused_linear_of_mixed_types(mode: str) -> None:
    """Files mix types inside one layer (Q4_K_M: Q4_K and Q6_K); F32 shows the zero-copy path."""
    parts = [linear("q", T.Q4_1, 64, 256, 1, mode), linear("k", T.Q8_0, 16, 256, 2, mode),
             linear("v", T.F32, 32, 256, 3, mode)]
    x = np.random.default_rng(7).standard_normal((3, 256)).astype(f32)
    want = [p(x) for p in parts]
    dense = np.concatenate([p.dense_weight() for p in parts])
    fused = fp.FusedLinear(parts)
    assert (fused.n_out, fused.n_in) == (112, 256)
    for got, w in zip(np.split(fused(x), [64, 80], axis=1), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
    ids = np.array([3, 0, 15])
    for p, (a, b) in zip(parts, fused.bounds, strict=True):
        np.testing.assert_array_equal(p.rows(ids), dense[a:b][ids])


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
        plan = AttentionPlan(kv, Batch([SeqChunk(seq, [1] * n, 0, "last")]))
        got = plan.attend(0, q, k, v, 0.25, window=window)
        kv.commit(seq, n)
        np.testing.assert_allclose(got, reference_attention(kv, 0, seq, q, window), rtol=1e-5, atol=1e-5)
    q, k, v = rows(3)
    plan = AttentionPlan(kv, Batch([SeqChunk(s, [1], lengths[s], "last") for s in (0, 1, 2)]))
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
        plan = AttentionPlan(kv, Batch([SeqChunk(s, [1], kv.length(s), "last") for s in seqs]))
        got = plan.attend(0, q, k, v, 0.25, window=window)
        for i, s in enumerate(seqs):
            kv.commit(s, kv.length(s) + 1)
            want = reference_attention(kv, 0, s, q[i : i + 1], window)
            np.testing.assert_allclose(got[i : i + 1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_folded_weights_give_the_unfolded_logits(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast dense folds RMSNorm weights and the attention scale into the projections at load
    (Kernels.fold); a prompt and decode steps give the logits of the same model unfolded,
    and the narrowing projections keep the row-major layout seen transposed."""
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    p = synth.PROMPT

    def run(model: Model) -> np.ndarray:
        rows = [model.eval_prompt(p[:12], 0, 0)]
        rows += [model.eval_prompt([t], 0) for t in p[12:16]]
        return np.stack(rows)

    folded = Model.load(path, weights="dense", n_ctx=synth.N_CTX)
    for lw in folded.net.layers:
        for proj in (lw.qkv, lw.wo, lw.gate_up, lw.down):
            if isinstance(proj, fp.FusedLinear) and proj.wt is not None:
                want = "F_CONTIGUOUS" if proj.n_in > proj.n_out else "C_CONTIGUOUS"
                assert proj.wt.flags[want], (name, proj.n_in, proj.n_out)
    if name == "llama":  # plain pre-norms and no Q/K norm: everything folds
        lw = folded.net.layers[0]
        assert lw.q_scaled and lw.attn_norm is not None and lw.attn_norm.weight is None
    got = run(folded)
    monkeypatch.setattr(fp.FastKernels, "fold", lambda self, proj, in_scale=None, out_scale=None: False)
    plain = Model.load(path, weights="dense", n_ctx=synth.N_CTX)
    assert not any(lw.q_scaled for lw in plain.net.layers)
    np.testing.assert_allclose(got, run(plain), rtol=1e-3, atol=1e-3)  # float32 rounding order only


@pytest.mark.parametrize("name", DECODERS)
def test_batched_decode_equals_one_sequence_at_a_time(name: str, tmp_path: Path) -> None:
    """Fast mode: three slots decoding together give the rows each gives alone."""
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    model = Model.load(path, weights="dense", n_ctx=3 * synth.N_CTX, n_seq=3, cache_type_k="f32", cache_type_v="f32")
    assert model.net.k.name == "fast"
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
    from pyllama.quant.pages import release_file_pages

    raw = np.random.default_rng(0).integers(0, 256, size=5 * 4096 + 123, dtype=np.uint8)
    (tmp_path / "blob").write_bytes(raw.tobytes())
    mapped = np.memmap(tmp_path / "blob", dtype=np.uint8, mode="r")
    view = mapped[1000 : 1000 + 3 * 4096]
    release_file_pages(view)
    release_file_pages(np.asarray(view)[::2])  # not contiguous: ignored
    release_file_pages(raw[10:20])  # not a mapped file: ignored
    np.testing.assert_array_equal(view, raw[1000 : 1000 + 3 * 4096])
    np.testing.assert_array_equal(mapped, raw)


@pytest.mark.parametrize("name", DECODERS)
def test_fast_and_exact_kernel_sets_agree(name: str, tmp_path: Path) -> None:
    """One block per architecture, two kernel sets: on float32 weights what differs is ggml's
    float16 K/V and attention and the summation order, well under 1e-2."""
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    batch = Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")])
    rows = {}
    for numerics in ("fast", "exact"):
        model = Model.load(path, weights="dense", n_ctx=synth.N_CTX, numerics=numerics)  # type: ignore[arg-type]
        assert model.net.k.name == numerics
        rows[numerics] = model.decode(batch)
    np.testing.assert_allclose(rows["fast"], rows["exact"], rtol=1e-2, atol=1e-2)


def test_two_models_with_different_numerics_do_not_leak_into_each_other(tmp_path: Path) -> None:
    """Numerics live in each model's kernel set: decoding an exact and a fast model in turn gives
    each the rows it gives alone, bit for bit."""
    path = synth.write_model("llama", tmp_path / "llama.gguf")
    p = list(synth.PROMPT)

    def steps(model: Model) -> list[np.ndarray]:
        model.kv.clear()
        return [model.eval_prompt(p[:8], 0, 0), *(model.eval_prompt([t], 0, 8 + i) for i, t in enumerate(p[8:12]))]

    fast = Model.load(path, weights="dense", n_ctx=synth.N_CTX, numerics="fast")
    exact = Model.load(path, weights="dense", n_ctx=synth.N_CTX, numerics="exact")
    alone = {"fast": steps(fast), "exact": steps(exact)}
    fast.kv.clear()
    exact.kv.clear()
    mixed: dict[str, list[np.ndarray]] = {"fast": [], "exact": []}
    for i in range(5):  # the two models take turns, step by step
        for name, model in (("exact", exact), ("fast", fast)):
            tokens, pos = (p[:8], 0) if i == 0 else ([p[7 + i]], 7 + i)
            mixed[name].append(model.eval_prompt(tokens, 0, pos))
    for name in ("fast", "exact"):
        for a, b in zip(alone[name], mixed[name], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(alone["fast"][-1], alone["exact"][-1])


def test_weight_arena_places_matrices_side_by_side() -> None:
    """Small matrices share one block, each on a 64-byte boundary, in allocation order; a
    matrix of half a block or more gets its own array."""
    from pyllama.kernels.arena import WeightArena

    arena = WeightArena(block_floats=1 << 12)
    a, b = arena.empty((3, 5)), arena.empty((7, 11))
    assert a.base is not None and a.base is b.base and a.flags.c_contiguous and b.flags.c_contiguous
    assert a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0 and a.ctypes.data < b.ctypes.data
    a[...], b[...] = 1.0, 2.0  # no overlap
    assert (a == 1.0).all() and (b == 2.0).all()
    big = arena.empty((64, 32))
    assert not np.shares_memory(big, a.base)
    rest = [arena.empty((30, 30)) for _ in range(6)]  # more than the block holds: a new block
    assert rest[0].base is a.base and rest[-1].base is not a.base


def test_a_models_dense_weights_share_its_arena(tmp_path: Path) -> None:
    """Fast dense: every layer's fused projections are views of the kernel set's blocks
    (huge pages, docs/performance.md), and decode gives the rows of separate arrays."""
    path = synth.write_model("llama", tmp_path / "llama.gguf")
    model = Model.load(path, weights="dense", n_ctx=synth.N_CTX)
    bases = {id(p.wt.base) for layer in model.net.layers for p in (layer.qkv, layer.wo, layer.gate_up, layer.down)
             if isinstance(p, fp.FusedLinear) and p.wt is not None and p.wt.base is not None}
    assert len(bases) == 1
    rows = model.decode(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")]))
    plain = Model.load(path, weights="dense", n_ctx=synth.N_CTX)
    for layer in plain.net.layers:
        for p in (layer.qkv, layer.wo, layer.gate_up, layer.down):
            assert isinstance(p, fp.FusedLinear) and p.wt is not None
            p.wt = p.wt.copy(order="K")  # an array of its own, same layout
    np.testing.assert_array_equal(rows, plain.decode(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")])))


def test_packing_and_backend_are_each_models_own(smollm2_path: Path) -> None:
    """Two models loaded in one process with different packing layouts and matmul kernels
    keep their own (no process-wide switch): the nibbles model is smaller, the einsum one
    multiplies with einsum, and the int8 one decodes as it does alone."""
    batch = Batch([SeqChunk(0, [1, 504, 3156, 28], 0, "last")])
    int8 = Model.load(smollm2_path, weights="packed", n_ctx=64)
    alone = int8.decode(batch)
    nibbles = Model.load(smollm2_path, weights="packed", n_ctx=64, packing="nibbles", backend="einsum")
    assert nibbles.weights_nbytes < 0.7 * int8.weights_nbytes
    assert nibbles.net.k.backend == "einsum" and int8.net.k.backend == "blas"
    assert {lin.backend for layer in nibbles.net.layers for lin in layer.qkv.parts} == {"einsum"}  # type: ignore[attr-defined]
    assert {lin.layout for layer in int8.net.layers for lin in layer.qkv.parts} == {"int8"}  # type: ignore[attr-defined]
    got = nibbles.decode(batch)
    int8.kv.clear()
    np.testing.assert_array_equal(int8.decode(batch), alone)
    np.testing.assert_allclose(got, alone, rtol=1e-3, atol=1e-3)
    from pyllama.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="unknown packing layout"):
        Model.load(smollm2_path, weights="packed", packing="int4")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="unknown matmul backend"):
        Model.load(smollm2_path, backend="gpu")  # type: ignore[arg-type]
