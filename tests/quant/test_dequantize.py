"""Every supported type dequantizes bit-exactly like gguf-py's reference (itself checked
against ggml), whole tensors and per-row, in both the dense and the packed layouts."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants as gguf_quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from pyllama.errors import ModelLoadError
from pyllama.quant import NIBBLE_TYPES, PACK_LAYOUTS, SUPPORTED_TYPES, PackLayout, dequantize, repack
from pyllama.quant import matmul as matmul_mod
from pyllama.quant.synthetic import ALL_TYPES, random_tensor_bytes

SHAPES_IN_BLOCKS = [(1, 1), (3, 2), (17, 5), (2, 3, 4)]


def reference(raw: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[qtype]
    rows = raw.reshape(-1, shape[-1] // GGML_QUANT_SIZES[qtype][0] * type_size)
    with np.errstate(all="ignore"):
        return np.asarray(gguf_quants.dequantize(rows, qtype), dtype=np.float32).reshape(shape)


def test_supported_types_are_the_promised_ones() -> None:
    assert set(ALL_TYPES) == set(SUPPORTED_TYPES)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("blocks", SHAPES_IN_BLOCKS, ids=str)
def test_dense_matches_gguf_reference(qtype: GGMLQuantizationType, blocks: tuple[int, ...]) -> None:
    rng = np.random.default_rng([qtype.value, *blocks])
    block_size = GGML_QUANT_SIZES[qtype][0]
    shape = (*blocks[:-1], blocks[-1] * block_size)
    raw = random_tensor_bytes(rng, qtype, shape)
    with np.errstate(all="ignore"):
        got = dequantize(raw, qtype, shape)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got, reference(raw, qtype, shape), equal_nan=True)


@pytest.mark.parametrize("small_tiles", [False, True], ids=["one-tile", "six-tiles"])
@pytest.mark.parametrize("layout", PACK_LAYOUTS)
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_packed_layout_matches_dense(
    qtype: GGMLQuantizationType, layout: PackLayout, small_tiles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(qtype.value)
    shape = (23, 3 * GGML_QUANT_SIZES[qtype][0])
    if small_tiles:  # 4 rows per tile: 6 tiles, the last one padded
        monkeypatch.setattr(matmul_mod, "TILE_WEIGHTS", 4 * shape[1])
    raw = random_tensor_bytes(rng, qtype, shape)
    with np.errstate(all="ignore"):
        dense = dequantize(raw, qtype, shape)
        packed = repack(raw, qtype, shape, layout=layout)
    if qtype in NIBBLE_TYPES:
        assert type(packed).__name__ == ("ScaledCodes" if layout == "int8" else "NibbleCodes")
    with np.errstate(all="ignore"):
        out = np.full(shape, 7.0, dtype=np.float32)
        packed.dequantize_into(out)
        part = np.full((5, shape[1]), 7.0, dtype=np.float32)
        packed.dequantize_into(part, 9)
        wt = np.full(shape[::-1], 7.0, dtype=np.float32)
        packed.dequantize_t_into(wt)
        ids = np.array([5, 0, 22, 5, 11, 21, 3])
        rows = packed.dequantize_rows(ids)
    assert np.array_equal(out, dense, equal_nan=True)
    assert np.array_equal(part, dense[9:14], equal_nan=True)
    assert np.array_equal(wt, dense.T, equal_nan=True)
    assert np.array_equal(rows, dense[ids], equal_nan=True)
    assert packed.shape == shape and packed.nbytes > 0


def test_chunked_dequantize_of_a_large_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyllama.quant as quant

    monkeypatch.setattr(quant, "_CHUNK_WEIGHTS", 1000)
    qtype = GGMLQuantizationType.Q4_K
    shape = (37, 512)
    raw = random_tensor_bytes(np.random.default_rng(1), qtype, shape)
    assert np.array_equal(dequantize(raw, qtype, shape), reference(raw, qtype, shape))


def test_unsupported_type_names_type_and_supported_list() -> None:
    with pytest.raises(ModelLoadError, match=r"IQ2_XXS is not supported \(supported: .*Q4_K"):
        dequantize(np.zeros(66, np.uint8), GGMLQuantizationType.IQ2_XXS, (256,))


def test_wrong_byte_count_and_bad_row_length_are_one_line_errors() -> None:
    with pytest.raises(ModelLoadError, match="needs 36 bytes, got 35"):
        dequantize(np.zeros(35, np.uint8), GGMLQuantizationType.Q4_0, (2, 32))
    with pytest.raises(ModelLoadError, match="not a multiple of its block size 32"):
        repack(np.zeros(18, np.uint8), GGMLQuantizationType.Q4_0, (33,))
