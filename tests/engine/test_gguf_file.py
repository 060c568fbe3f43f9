"""Our GGUF parser agrees with gguf.GGUFReader and rejects broken files with one clear line."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGMLQuantizationType

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import parse_gguf, read_gguf


def write_small(path: Path) -> None:
    w = GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("general.name", "tiny ✓")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "ç", "<s>"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5, 0.5])
    rng = np.random.default_rng(0)
    w.add_tensor("w32", rng.standard_normal((3, 64)).astype(np.float32))
    w.add_tensor("w16", rng.standard_normal((2, 32)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_matches_gguf_reader_on_real_model(smollm2_path: Path) -> None:
    ours = read_gguf(smollm2_path)
    ref = GGUFReader(smollm2_path)
    assert set(ours.tensors) == {t.name for t in ref.tensors}
    for t in ref.tensors:
        mine = ours.tensors[t.name]
        assert mine.ggml_type == t.tensor_type
        assert np.array_equal(mine.data.reshape(-1), np.asarray(t.data).reshape(-1).view(np.uint8))
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        mine_v = ours.metadata[key]
        if isinstance(mine_v, np.ndarray):
            assert np.array_equal(mine_v, np.asarray(value)), key
        elif isinstance(mine_v, float):
            assert mine_v == pytest.approx(value), key
        else:
            assert mine_v == value, key


def test_small_file_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "small.gguf"
    write_small(p)
    g = read_gguf(p)
    assert g.metadata["general.name"] == "tiny ✓"
    assert g.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ç", "<s>"]
    assert g.metadata["tokenizer.ggml.add_bos_token"] is True
    assert g.tensors["w32"].shape == (3, 64)
    assert g.tensors["w16"].ggml_type == GGMLQuantizationType.F16
    # the same bytes parse from memory (the browser path)
    g2 = parse_gguf(p.read_bytes(), "mem")
    assert np.array_equal(g2.tensors["w32"].data, g.tensors["w32"].data)


CORRUPTIONS = {
    "missing": None,
    "empty": b"",
    "bad magic": b"GGML" + b"\0" * 60,
    "wrong version": b"GGUF" + struct.pack("<I", 99) + b"\0" * 60,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_broken_headers_give_one_line(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "bad.gguf"
    data = CORRUPTIONS[kind]
    if data is not None:
        p.write_bytes(data)
    with pytest.raises(ModelLoadError) as e:
        read_gguf(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg


def test_truncated_file_names_the_tensor(tmp_path: Path) -> None:
    p = tmp_path / "small.gguf"
    write_small(p)
    raw = p.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ModelLoadError, match=r"tensor w16 .*truncated"):
        read_gguf(cut)
    header_cut = tmp_path / "cut2.gguf"
    header_cut.write_bytes(raw[:60])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf(header_cut)
