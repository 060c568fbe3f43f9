"""Linear: dense and packed modes compute the same thing; rows() and concat() are exact."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants as gguf_quants
from gguf.constants import GGMLQuantizationType

from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.gguf_file import TensorInfo
from pyllama.kernels.fast import FusedLinear
from pyllama.linear import Linear, ScratchPool
from pyllama.quant import NIBBLE_TYPES
from pyllama.quant import matmul as matmul_mod
from pyllama.quant.grouped import tile_strategy
from pyllama.quant.synthetic import random_tensor_bytes

T = GGMLQuantizationType
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RAW_ONLY = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]


def make_info(name: str, qtype: GGMLQuantizationType, n_out: int, n_in: int, seed: int) -> TensorInfo:
    rng = np.random.default_rng(seed)
    if qtype in QUANTIZABLE:
        w = rng.standard_normal((n_out, n_in)).astype(np.float32)
        data = np.ascontiguousarray(gguf_quants.quantize(w, qtype)).view(np.uint8).reshape(-1)
    else:
        data = random_tensor_bytes(rng, qtype, (n_out, n_in))
    return TensorInfo(name, qtype, (n_out, n_in), 0, data.size, data)


@pytest.fixture(params=["blas", "einsum"])
def backend(request: pytest.FixtureRequest) -> str:
    """The matmul kernel the Linear objects of a test are built with."""
    return str(request.param)


@pytest.fixture(params=[False, True], ids=["one-tile", "many-tiles"])
def tiles(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param:
        monkeypatch.setattr(matmul_mod, "TILE_WEIGHTS", 5000)  # 9 rows of 512: 6 tiles for 48 rows
    return bool(request.param)


TOKEN_COUNTS = [1, 4, 17]


def test_token_counts_exercise_every_tile_strategy() -> None:
    seen = {tile_strategy(n, backend) for n in TOKEN_COUNTS for backend in ("blas", "einsum")}
    assert seen == {"grouped-matmul", "grouped-einsum", "dequant"}


@pytest.mark.parametrize("n_tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("qtype", QUANTIZABLE + RAW_ONLY, ids=lambda t: t.name)
def test_dense_and_packed_agree(
    qtype: GGMLQuantizationType, n_tokens: int, backend: str, tiles: bool
) -> None:
    info = make_info("w", qtype, 48, 512, qtype.value)
    dense, packed = Linear(info, "dense", backend=backend), Linear(info, "packed", backend=backend)  # type: ignore[arg-type]
    assert np.array_equal(dense.dense_weight(), packed.dense_weight())
    x = np.random.default_rng(0).standard_normal((n_tokens, 512)).astype(np.float32)
    y_dense, y_packed = dense(x), packed(x)
    assert y_dense.shape == (n_tokens, 48) and y_dense.dtype == np.float32
    np.testing.assert_allclose(y_packed, y_dense, rtol=1e-5, atol=1e-5 * float(np.abs(y_dense).max()))
    # Against an independent float64 computation from gguf-py's dequantizer.
    w_ref = np.asarray(gguf_quants.dequantize(info.data.reshape(48, -1), qtype), dtype=np.float64)
    np.testing.assert_allclose(y_dense, x @ w_ref.T, rtol=1e-4, atol=1e-4 * float(np.abs(y_dense).max()))
    # Into a caller's buffer, for both layouts.
    for lin in (dense, packed):
        buf = np.full((n_tokens, 48), np.nan, dtype=np.float32)
        assert lin(x, out=buf) is not None
        np.testing.assert_allclose(buf, y_dense, rtol=1e-5, atol=1e-5 * float(np.abs(y_dense).max()))
    with pytest.raises(ValueError, match="out must be C-contiguous float32"):
        dense(x, out=np.empty((n_tokens, 47), dtype=np.float32))
    # A single vector works too.
    np.testing.assert_allclose(packed(x[-1]), y_dense[-1], rtol=1e-5, atol=1e-5 * float(np.abs(y_dense).max()))


@pytest.mark.parametrize("layout", ["nibbles", "compact"])
@pytest.mark.parametrize("n_tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("qtype", list(NIBBLE_TYPES), ids=lambda t: t.name)
def test_nibble_layout_agrees_with_dense(
    qtype: GGMLQuantizationType, n_tokens: int, layout: str, backend: str, tiles: bool
) -> None:
    info = make_info("w", qtype, 48, 512, qtype.value)
    dense = Linear(info, "dense", backend=backend)  # type: ignore[arg-type]
    packed = Linear(info, "packed", layout=layout, backend=backend)  # type: ignore[arg-type]
    assert type(packed.packed).__name__ == "NibbleCodes"
    # Half a byte per code + a float32 scale (+ min, or Q4_0's folded -8 * scale) per 32;
    # compact keeps the legacy types' float16 scales (and Q4_1's mins).
    budget = {(T.Q4_1, "compact"): 0.625, (T.Q4_0, "compact"): 0.6875}.get((qtype, layout), 0.75)
    assert packed.nbytes <= budget * 48 * 512 + 1
    x = np.random.default_rng(0).standard_normal((n_tokens, 512)).astype(np.float32)
    y_dense = dense(x)
    np.testing.assert_allclose(packed(x), y_dense, rtol=1e-5, atol=1e-5 * float(np.abs(y_dense).max()))
    ids = np.array([47, 0, 5])
    assert np.array_equal(packed.rows(ids), dense.rows(ids))


@pytest.mark.parametrize("mode", ["dense", "packed"])
@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q6_K, T.F16, T.F32], ids=lambda t: t.name)
def test_rows_are_exact(qtype: GGMLQuantizationType, mode: str) -> None:
    info = make_info("tok_embd", qtype, 40, 256, 7)
    lin = Linear(info, mode)  # type: ignore[arg-type]
    full = Linear(info, "dense").dense_weight()
    ids = np.array([3, 39, 0, 3])
    assert np.array_equal(lin.rows(ids), full[ids])
    assert lin.rows(np.array([], dtype=np.int64)).shape == (0, 256)
    with pytest.raises(InvalidRequestError, match=r"row ids must be in \[0, 40\)"):
        lin.rows(np.array([40]))


@pytest.mark.parametrize("n_tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("mode", ["dense", "packed"])
def test_fused_mixed_types_equals_separate_calls(mode: str, n_tokens: int, backend: str, tiles: bool) -> None:
    # Q4_K_M files mix Q4_K and Q6_K inside one layer; F32 shows the zero-copy path.
    q = Linear(make_info("q", T.Q4_K, 64, 256, 1), mode, backend=backend)  # type: ignore[arg-type]
    k = Linear(make_info("k", T.Q6_K, 16, 256, 2), mode, backend=backend)  # type: ignore[arg-type]
    v = Linear(make_info("v", T.F32, 32, 256, 3), mode, backend=backend)  # type: ignore[arg-type]
    x = np.random.default_rng(1).standard_normal((n_tokens, 256)).astype(np.float32)
    wants = [lin(x) for lin in (q, k, v)]
    full = np.concatenate([q.dense_weight(), k.dense_weight(), v.dense_weight()])
    qkv = FusedLinear([q, k, v], backend=backend)  # type: ignore[arg-type]
    assert (qkv.n_out, qkv.n_in) == (112, 256)
    for got, want in zip(np.split(qkv(x), [64, 80], axis=-1), wants, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    ids = np.array([63, 0, 5])
    for lin, (a, b) in zip([q, k, v], qkv.bounds, strict=True):  # the parts' rows survive fusing
        assert np.array_equal(lin.rows(ids[ids < b - a]), full[a:b][ids[ids < b - a]])


def test_packed_memory_and_shared_scratch() -> None:
    pool = ScratchPool()
    info = make_info("w", T.Q4_0, 256, 1024, 5)
    dense, packed = Linear(info, "dense"), Linear(info, "packed", scratch=pool)
    small = Linear(make_info("s", T.Q8_0, 8, 1024, 6), "packed", scratch=pool)
    assert dense.nbytes == 256 * 1024 * 4
    assert packed.nbytes < dense.nbytes / 3
    x = np.ones((1, 1024), dtype=np.float32)
    packed(x)
    buf_size = pool.nbytes
    assert packed.packed is not None
    assert buf_size == 4 * packed.packed.scratch_size() >= 256 * 1024 * 4  # one tile: the whole matrix
    y_small = small(x)
    assert pool.nbytes == buf_size  # the smaller matrix reuses the same buffer
    np.testing.assert_allclose(y_small, Linear(small.info, "dense")(x), rtol=1e-5, atol=1e-4)
    # The packed F32 weight is the file data itself, not a copy.
    f32 = Linear(make_info("f", T.F32, 4, 64, 1), "packed")
    assert f32.weight is not None and np.shares_memory(f32.weight, f32.info.data)


def test_bad_inputs_are_clear_errors() -> None:
    info = make_info("blk.0.attn_q.weight", T.Q4_0, 4, 64, 1)
    with pytest.raises(ModelLoadError, match=r"blk.0.attn_q.weight: unknown weight mode"):
        Linear(info, "fast")  # type: ignore[arg-type]
    bad = TensorInfo("blk.0.x", T.IQ2_XXS, (4, 256), 0, 4 * 66, np.zeros(4 * 66, np.uint8))
    with pytest.raises(ModelLoadError, match=r"^tensor blk.0.x: tensor type IQ2_XXS is not supported"):
        Linear(bad, "packed")
    with pytest.raises(ValueError, match="input width 32 != 64"):
        Linear(info)(np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError, match="unknown matmul backend"):
        Linear(info, backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown packing layout"):
        Linear(info, "packed", layout="nibble")  # type: ignore[arg-type]


def test_default_scratch_is_shared_within_a_thread_only() -> None:
    import threading

    from pyllama.linear import default_scratch

    a = Linear(make_info("a", T.Q4_0, 64, 256, 1), "packed")
    b = Linear(make_info("b", T.Q4_0, 16, 256, 2), "packed")
    x = np.ones((1, 256), dtype=np.float32)
    a(x)
    size = default_scratch().nbytes
    assert size >= 64 * 256 * 4
    b(x)
    assert default_scratch().nbytes == size
    other: list[ScratchPool] = []
    t = threading.Thread(target=lambda: other.append(default_scratch()))
    t.start()
    t.join()
    assert other[0] is not default_scratch()
