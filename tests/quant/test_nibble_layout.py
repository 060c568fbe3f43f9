"""The nibble layout on the real models' tensors: its matmul agrees with the dense
dequantized weights (and, for offset-free Q4_1, equals the int8 layout bit for bit), rows
are exact, and a packed SmolLM2 really holds ~0.69 bytes per 4-bit weight.

Synthetic Q4_0 (offset 8), Q4_1 and Q4_K tensors are covered in test_linear.py and
test_dequantize.py; these catch what random blocks might not (real scale ranges, the
fused row counts of a model, Gemma's Q4_K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType

from pyllama.gguf_file import GGUFFile, read_gguf
from pyllama.linear import Linear
from pyllama.quant import dequantize, repack

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> GGUFFile:
    return read_gguf(smollm2_path)


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> GGUFFile:
    return read_gguf(gemma_path)


@pytest.fixture(params=["blas", "einsum"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fused(gguf: GGUFFile, names: list[str]) -> tuple[np.ndarray, object, tuple[int, int]]:
    """Several tensors' raw rows as one tensor, the way kernels.fast.FusedLinear repacks them."""
    infos = [gguf.tensors[n] for n in names]
    raw = np.concatenate([np.asarray(i.data).reshape(-1) for i in infos])
    return raw, infos[0].ggml_type, (sum(i.shape[0] for i in infos), infos[0].shape[1])


CASES = {
    "smollm2-qkv-q4_1": ("smollm2", ["blk.3.attn_q.weight", "blk.3.attn_k.weight", "blk.3.attn_v.weight"]),
    "smollm2-down-q4_1": ("smollm2", ["blk.7.ffn_down.weight"]),
    "gemma-attn_output-q4_k": ("gemma", ["blk.0.attn_output.weight"]),
}


@pytest.mark.parametrize("n_tokens", [1, 3, 20])  # grouped kernels (1, 3) and dequant tiles (20)
@pytest.mark.parametrize("case", list(CASES))
def test_nibbles_match_dense_on_real_tensors(
    case: str, n_tokens: int, backend: str, request: pytest.FixtureRequest
) -> None:
    model, names = CASES[case]
    raw, qtype, shape = _fused(request.getfixturevalue(model), names)
    w = dequantize(raw, qtype, shape)  # type: ignore[arg-type]
    nib = repack(raw, qtype, shape, layout="nibbles")  # type: ignore[arg-type]
    assert type(nib).__name__ == "NibbleCodes"
    x = np.random.default_rng(n_tokens).standard_normal((n_tokens, shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    got = np.empty((n_tokens, shape[0]), dtype=np.float32)
    nib.matmul_t_into(x, got, np.empty(nib.scratch_size(), dtype=np.float32), backend)  # type: ignore[arg-type]
    # float32 summation-order differences only: relative to the size of the terms summed.
    scale = np.abs(x).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    assert np.all(np.abs(got - want) <= 2e-6 * scale + 1e-30)
    ids = np.array([shape[0] - 1, 0, 7, 7, shape[0] // 2])
    assert np.array_equal(nib.dequantize_rows(ids), w[ids])
    if str(qtype.name) == "Q4_1":  # type: ignore[attr-defined]
        int8 = repack(raw, qtype, shape, layout="int8")  # type: ignore[arg-type]
        same = np.empty_like(got)
        int8.matmul_t_into(x, same, np.empty(int8.scratch_size(), dtype=np.float32), backend)  # type: ignore[arg-type]
        assert np.array_equal(got, same)  # identical float32 codes into the same kernel


def test_packed_smollm2_weights_fit_the_nibble_budget(smollm2: GGUFFile) -> None:
    """Every 2-D weight of SmolLM2 as packed Linear. Lean layout: Q4_1 at 0.6875 bytes per
    weight (nibbles, float16 d, float32 m), the Q8_0 embedding/head at 1.0625 (float16 d):
    98.3 MiB. The int8 default: 157 MiB. A fallback to int8 codes or to float32 scales
    fails here."""
    infos = [t for t in smollm2.tensors.values() if len(t.shape) == 2]
    n_q4 = sum(int(np.prod(t.shape)) for t in infos if t.ggml_type.name == "Q4_1")
    assert n_q4 > 100_000_000  # the budgets below are really about the 4-bit weights
    assert 95 * 2**20 < sum(Linear(info, "packed", layout="nibbles").nbytes for info in infos) <= 99 * 2**20
    assert 150 * 2**20 < sum(Linear(info, "packed").nbytes for info in infos) <= 158 * 2**20


def test_nonnegative_float16_widening_is_exact_for_every_value() -> None:
    """All 31744 finite non-negative float16 bit patterns (zero and subnormals included)
    through the shift-and-multiply widening the packed matmuls use for Q8_0/Q4_1 scales."""
    from pyllama.quant.grouped import _as_float32

    h = np.arange(0x7C00, dtype=np.uint16).view(np.float16).reshape(248, 128)
    buf = np.full(h.shape, np.nan, dtype=np.float32)
    got = _as_float32(h, buf, nonnegative=True)
    assert got is buf and np.array_equal(got, h.astype(np.float32))


def test_negative_q8_0_scales_fall_back_to_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Q8_0 block with a negative d (ggml never writes one, another tool might) in the
    last of 5 tiles: the tile check turns all scales float32 and the matmul stays right."""
    from gguf import quants as gguf_quants

    from pyllama.quant import matmul as matmul_mod

    monkeypatch.setattr(matmul_mod, "TILE_WEIGHTS", 8 * 64)

    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 64)).astype(np.float32)
    raw = np.ascontiguousarray(gguf_quants.quantize(w, GGMLQuantizationType.Q8_0)).view(np.uint8).reshape(40, -1)
    d = raw[:, :2].copy().view(np.float16)
    raw[35, :2] = (-d[35]).view(np.uint8)  # flip one block's scale in the last rows
    packed = repack(raw.reshape(-1), GGMLQuantizationType.Q8_0, (40, 64), layout="nibbles")
    assert packed.scale.dtype == np.float32  # type: ignore[attr-defined]
    dense = dequantize(raw.reshape(-1), GGMLQuantizationType.Q8_0, (40, 64))
    x = rng.standard_normal((1, 64)).astype(np.float32)
    y = np.empty((1, 40), dtype=np.float32)
    packed.matmul_t_into(x, y, np.empty(packed.scratch_size(), dtype=np.float32))
    np.testing.assert_allclose(y, x @ dense.T, rtol=1e-5, atol=1e-5)
    ok = repack(raw[:32].reshape(-1), GGMLQuantizationType.Q8_0, (32, 64), layout="nibbles")
    assert ok.scale.dtype == np.float16  # type: ignore[attr-defined]
