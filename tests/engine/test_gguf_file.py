"""Our GGUF parser agrees with gguf.GGUFReader and rejects broken files with one clear line.

`corrupted_models()` builds the broken files the reliability tests use: a tiny valid llama
model (tests/models/synth.py) is re-serialized field by field with one thing wrong, so each
file is otherwise loadable and only the planted defect can stop it. The CLI and server
tests (tests/server/test_reliability_models.py) reuse the same files.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGMLQuantizationType

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import parse_gguf, read_gguf
from tests.models.synth import write_model


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


# -- ten-plus kinds of corrupted models ---------------------------------------------------------

_DTYPE_CODE = {"uint8": 0, "int8": 1, "uint16": 2, "int16": 3, "uint32": 4, "int32": 5, "float32": 6, "bool": 7,
               "uint64": 10, "int64": 11, "float64": 12}
_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(vtype: int, value: Any) -> bytes:
    if vtype in _FORMAT:
        return struct.pack(_FORMAT[vtype], value)
    if vtype == 8:
        return _gguf_string(value)
    if isinstance(value, np.ndarray):
        return struct.pack("<IQ", _DTYPE_CODE[value.dtype.name], len(value)) + value.tobytes()
    return struct.pack("<IQ", 8, len(value)) + b"".join(_gguf_string(v) for v in value)


def gguf_parts(path: Path) -> dict[str, Any]:
    """A GGUF file as editable parts: metadata (key, type, value), tensor infos, data region."""
    g = read_gguf(path)
    start = min(t.offset for t in g.tensors.values())
    return {
        "version": g.version,
        "alignment": g.alignment,
        "kvs": [(k, g.value_types[k], v) for k, v in g.metadata.items()],
        "tensors": [[t.name, list(reversed(t.shape)), int(t.ggml_type), t.offset - start] for t in g.tensors.values()],
        "data": path.read_bytes()[start:],
    }


def gguf_bytes(parts: dict[str, Any], n_tensors: int | None = None) -> bytes:
    """Serialize parts exactly as GGUFWriter would (a round trip is byte-identical)."""
    head = b"GGUF" + struct.pack("<IQQ", parts["version"],
                                 len(parts["tensors"]) if n_tensors is None else n_tensors, len(parts["kvs"]))
    for key, vtype, value in parts["kvs"]:
        head += _gguf_string(key) + struct.pack("<I", vtype) + _gguf_value(vtype, value)
    for name, dims, ttype, offset in parts["tensors"]:
        head += _gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", ttype, offset)
    head += b"\0" * (-len(head) % parts["alignment"])
    return head + parts["data"]


def _edited(parts: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    copied = copy.deepcopy(parts)
    change(copied)
    return gguf_bytes(copied)


def _set_kv(key: str, vtype: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        p["kvs"] = [(k, vtype, value) if k == key else (k, t, v) for k, t, v in p["kvs"]]
    return change


def _set_tensor(index: int, field: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        p["tensors"][index][field] = value(p) if callable(value) else value
    return change


# kind -> the words its one-line error must contain
CORRUPTION_MESSAGES = {
    "truncated": "truncated",
    "bad magic": "not a GGUF file",
    "wrong version": "version 99 is not supported",
    "data beyond end": "runs past the end of the file",
    "absurd dimensions": "absurd dimensions",
    "unknown ggml type": "unknown ggml type 99",
    "wrong metadata type": "llama.block_count must be an integer",
    "bad string length": "absurd length of metadata key",
    "duplicate tensor name": "duplicate tensor name",
    "misaligned offset": "not a multiple of the alignment",
    "missing required key": "llama.embedding_length is missing",
    "duplicate metadata key": "duplicate metadata key",
    "absurd tensor count": "absurd tensor count",
    "missing tensor": "required tensor blk.0.attn_norm.weight is missing",
}


def corrupted_models(folder: Path) -> dict[str, Path]:
    """Write one broken model per kind in CORRUPTION_MESSAGES; returns kind -> path."""
    valid = write_model("llama", folder / "valid.gguf")
    raw = valid.read_bytes()
    parts = gguf_parts(valid)
    assert gguf_bytes(parts) == raw  # the serializer itself is faithful
    contents = {
        "truncated": raw[: len(raw) * 2 // 3],
        "bad magic": b"GGML" + raw[4:],
        "wrong version": raw[:4] + struct.pack("<I", 99) + raw[8:],
        "data beyond end": _edited(parts, _set_tensor(1, 3, len(raw) * 4)),
        "absurd dimensions": _edited(parts, _set_tensor(0, 1, [2**40, 2**40])),
        "unknown ggml type": _edited(parts, _set_tensor(1, 2, 99)),
        "wrong metadata type": _edited(parts, _set_kv("llama.block_count", 8, "two")),
        "bad string length": raw[:24] + struct.pack("<Q", 2**40) + raw[32:],
        "duplicate tensor name": _edited(parts, _set_tensor(2, 0, lambda p: p["tensors"][1][0])),
        "misaligned offset": _edited(parts, _set_tensor(1, 3, lambda p: p["tensors"][1][3] + 3)),
        "missing required key": _edited(parts, lambda p: p.update(
            kvs=[kv for kv in p["kvs"] if kv[0] != "llama.embedding_length"])),
        "duplicate metadata key": _edited(parts, lambda p: p["kvs"].append(("llama.block_count", 4, 2))),
        "absurd tensor count": gguf_bytes(parts, n_tensors=2**40),
        "missing tensor": _edited(parts, lambda p: p["tensors"].pop(3)),
    }
    paths = {}
    for kind, data in contents.items():
        path = folder / (kind.replace(" ", "-") + ".gguf")
        path.write_bytes(data)
        paths[kind] = path
    return paths


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corrupted_models(tmp_path_factory.mktemp("corrupt"))


def test_the_valid_base_model_loads(corrupted: dict[str, Path]) -> None:
    from pyllama.engine import Model

    Model.load(corrupted["truncated"].parent / "valid.gguf")


@pytest.mark.parametrize("kind", sorted(CORRUPTION_MESSAGES))
def test_corrupted_model_fails_to_load_with_one_line(corrupted: dict[str, Path], kind: str) -> None:
    from pyllama.engine import Model

    with pytest.raises(ModelLoadError) as info:
        Model.load(corrupted[kind])
    message = str(info.value)
    assert "\n" not in message and str(corrupted[kind]) in message
    assert CORRUPTION_MESSAGES[kind] in message, message
