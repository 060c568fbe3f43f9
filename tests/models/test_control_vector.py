"""Control vectors on SmolLM2 (pyllama/control_vector.py), checked against the forward pass
run block by block by hand: a zero vector changes nothing, a vector on layer N is the same
as adding it to block N's output, scales and files add up, the layer range is inclusive and
never includes layer 0, and every kind of bad file fails with one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyllama.control_vector import apply_control_vector, load_control_vectors
from pyllama.engine import Model
from pyllama.errors import ModelLoadError
from pyllama.models import Batch, SeqChunk
from tests.parity.control_vector_file import parity_directions, write_control_vector, write_parity_vector

PROMPT = [504, 3575, 282, 4649, 314, 253, 1345, 28]
N_EMBD = 576


@pytest.fixture(scope="module", params=["fast", "exact"])
def model(request: pytest.FixtureRequest, smollm2_path: Path) -> Model:
    return Model.load(smollm2_path, n_ctx=64, numerics=request.param)


def logits(model: Model) -> np.ndarray[Any, Any]:
    model.kv.clear(0)
    return model.decode(Batch([SeqChunk(0, PROMPT, 0, "all")]))


def by_hand(model: Model, added: dict[int, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The forward pass through the model's own block methods, `added[il]` added after block il."""
    net = model.net
    net.control_vector = None
    model.kv.clear(0)
    batch = Batch([SeqChunk(0, PROMPT, 0, "all")])
    att = net.k.attention(net.kv, batch, net.causal)
    x = net.embed(np.array(PROMPT, dtype=np.int64), att.positions)
    for il in range(net.config.n_layer):
        x = net.block(il, x, att)
        if il in added:
            x += added[il]
    net.kv.commit(0, len(PROMPT))
    out: np.ndarray[Any, Any] = net.head(net.norm(net.output_norm, x))
    return out


def vec(seed: int, scale: float = 1.0) -> np.ndarray[Any, Any]:
    return (np.random.default_rng(seed).standard_normal(N_EMBD) * scale).astype(np.float32)


def set_cvec(model: Model, files: list[tuple[Path, float]], start: int = -1, end: int = -1) -> None:
    apply_control_vector(model.net, load_control_vectors([(str(p), s) for p, s in files]), start, end)


def test_zero_vector_changes_nothing(model: Model, tmp_path: Path) -> None:
    apply_control_vector(model.net, None)
    base = logits(model)
    n_layer = model.config.n_layer
    f = write_control_vector(tmp_path / "zero.gguf", {f"direction.{i}": np.zeros(N_EMBD, np.float32)
                                                        for i in range(1, n_layer + 1)})
    set_cvec(model, [(f, 1.0)])
    try:
        assert np.array_equal(logits(model), base)
    finally:
        apply_control_vector(model.net, None)
    assert np.array_equal(by_hand(model, {}), base)  # the hand-run pass is the model's own


def test_one_layer_equals_adding_it_by_hand(model: Model, tmp_path: Path) -> None:
    v = vec(1, 0.5)
    f = write_control_vector(tmp_path / "l7.gguf", {"direction.7": v})
    set_cvec(model, [(f, 1.0)])
    try:
        steered = logits(model)
    finally:
        apply_control_vector(model.net, None)
    assert np.array_equal(steered, by_hand(model, {7: v}))
    assert not np.allclose(steered, logits(model), atol=1e-3)  # the vector does something


def test_scales_and_files_sum_and_the_range_is_inclusive(model: Model, tmp_path: Path) -> None:
    a, b, c = vec(2, 0.3), vec(3, 0.3), vec(4, 0.3)
    f1 = write_control_vector(tmp_path / "a.gguf", {"direction.3": a, "direction.5": b, "direction.9": c})
    f2 = write_control_vector(tmp_path / "b.gguf", {"direction.5": c})
    s1, s2 = np.float32(0.8), np.float32(-1.5)
    set_cvec(model, [(f1, 0.8), (f2, -1.5)], 3, 5)  # layer 9 is outside [3, 5]
    try:
        steered = logits(model)
    finally:
        apply_control_vector(model.net, None)
    expected = by_hand(model, {3: a * s1, 5: b * s1 + c * s2})
    assert np.array_equal(steered, expected)


def test_layer_zero_and_defaults(model: Model, tmp_path: Path) -> None:
    """Layer 0 never gets a vector; a range <= 0 means the first / last layer; start > end: nothing."""
    n_layer = model.config.n_layer
    cv = load_control_vectors([(write_control_vector(tmp_path / "all.gguf", {
        f"direction.{i}": vec(10 + i, 0.01) for i in range(1, n_layer + 3)}), 1.0)])
    layers = cv.layers(n_layer, 0, 0)
    assert layers[0] is None and all(v is not None for v in layers[1:]) and len(layers) == n_layer
    assert cv.layers(n_layer, 4, 2) == [None] * n_layer
    got = cv.layers(n_layer, 2, 4)
    assert [i for i, v in enumerate(got) if v is not None] == [2, 3, 4]
    assert got[2] is not None and np.array_equal(got[2], cv.data[1])  # direction.2 -> block 2
    assert [i for i, v in enumerate(cv.layers(n_layer, -5, 7)) if v is not None] == list(range(1, 8))


def test_parity_vector_file_is_reproducible(tmp_path: Path) -> None:
    """The golden's vector is rebuilt, not stored: the writer gives the same bytes and values each time."""
    sha1 = write_parity_vector(tmp_path / "a.gguf")
    assert write_parity_vector(tmp_path / "b.gguf") == sha1
    cv = load_control_vectors([(str(tmp_path / "a.gguf"), 1.0)])
    for name, v in parity_directions().items():
        assert np.array_equal(cv.data[int(name.split(".")[1]) - 1], v)


@pytest.mark.parametrize(("tensors", "message"), [
    ({"direction.0": np.zeros(N_EMBD, np.float32)}, "invalid (zero) direction tensor layer index"),
    ({"direction.x": np.zeros(N_EMBD, np.float32)}, "invalid/unparsable direction tensor layer index"),
    ({"weight.1": np.zeros(N_EMBD, np.float32)}, "invalid/unparsable direction tensor layer index"),
    ({"direction.1": np.zeros(N_EMBD, np.float16)}, "invalid (non-F32) direction tensor type"),
    ({"direction.1": np.zeros((2, N_EMBD), np.float32)}, "invalid (non-1D) direction tensor shape"),
    ({"direction.1": np.zeros(N_EMBD, np.float32), "direction.2": np.zeros(8, np.float32)}, "not the 576"),
    ({}, "no direction tensors"),
])
def test_bad_files_fail_with_one_line(tmp_path: Path, tensors: dict[str, Any], message: str) -> None:
    f = write_control_vector(tmp_path / "bad.gguf", tensors)
    with pytest.raises(ModelLoadError) as exc:
        load_control_vectors([(str(f), 1.0)])
    assert message in str(exc.value) and str(f) in str(exc.value) and "\n" not in str(exc.value)


def test_mismatched_files_and_widths(model: Model, tmp_path: Path) -> None:
    f1 = write_control_vector(tmp_path / "a.gguf", {"direction.1": vec(1)})
    f2 = write_control_vector(tmp_path / "b.gguf", {"direction.1": np.zeros(8, np.float32)})
    with pytest.raises(ModelLoadError, match="not the 576 of the previous files"):
        load_control_vectors([(str(f1), 1.0), (str(f2), 1.0)])
    with pytest.raises(ModelLoadError, match=r"n_embd \(8\) does not match the model's \(576\)"):
        set_cvec(model, [(f2, 1.0)])
    with pytest.raises(ModelLoadError, match="failed to load control vector file"):
        load_control_vectors([(str(tmp_path / "missing.gguf"), 1.0)])
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelLoadError, match="failed to load control vector file"):
        load_control_vectors([(str(tmp_path / "junk.gguf"), 1.0)])
