"""Every architecture on a tiny random GGUF vs llama.cpp's logits (stored in expected/).

The expected rows come from make_expected.py (llama-cpp-python oracle, f32 KV cache,
flash attention); this test rebuilds the same GGUF with synth.py and needs no oracle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyllama.engine import Model, RopeOverrides
from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.models import ARCHITECTURES, Batch, SeqChunk
from tests.models import synth

EXPECTED = Path(__file__).resolve().parent / "expected"
TOLERANCE = 1e-3


def load(name: str, tmp_path: Path, **kwargs: object) -> Model:
    path = synth.write_model(name, tmp_path / f"{name}.gguf")
    opts: dict[str, object] = {"weights": "dense", "n_ctx": synth.N_CTX, "cache_type_k": "f32", "cache_type_v": "f32"}
    opts.update(kwargs)
    return Model.load(path, **opts)


def expected_rows(name: str) -> np.ndarray:
    return np.asarray(np.load(EXPECTED / f"{name}.npz")["rows"])


@pytest.mark.parametrize("name", list(synth.MODELS))
def test_matches_llama_cpp(name: str, tmp_path: Path) -> None:
    model = load(name, tmp_path)
    batch = Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")])
    embedding_model = synth.MODELS[name][0] in synth.EMBEDDING_ARCHS
    rows = model.hidden(batch) if embedding_model else model.decode(batch)
    want = expected_rows(name)
    assert rows.shape == want.shape
    err = float(np.abs(rows - want).max())
    assert err < TOLERANCE, f"{name}: max |pyllama - llama.cpp| = {err:.2e}"


@pytest.mark.parametrize("name", [n for n, (a, _) in synth.MODELS.items() if a not in synth.EMBEDDING_ARCHS])
def test_incremental_decode_uses_the_cache(name: str, tmp_path: Path) -> None:
    """Prompt in two pieces, then one token at a time: the KV cache must give the same rows."""
    model = load(name, tmp_path, weights="packed")
    p = synth.PROMPT
    first = model.decode(Batch([SeqChunk(0, p[:20], 0, "all")]))
    second = model.decode(Batch([SeqChunk(0, p[20:30], 20, "all")]))
    rest = [model.decode(Batch([SeqChunk(0, [t], 30 + i, "last")])) for i, t in enumerate(p[30:])]
    rows = np.concatenate([first, second, *rest])
    err = float(np.abs(rows - expected_rows(name)).max())
    assert err < TOLERANCE, f"{name}: incremental max error {err:.2e}"


@pytest.mark.parametrize("name", list(synth.ROPE_FLAGS))
def test_rope_flags_match_llama_cpp(name: str, tmp_path: Path) -> None:
    """--rope-scaling/--rope-freq-base/--rope-freq-scale/--yarn-* on top of the GGUF's values."""
    base, flags = synth.ROPE_FLAGS[name]
    model = load(base, tmp_path, rope=RopeOverrides(**flags))
    rows = model.decode(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")]))
    want = expected_rows(name)
    assert float(np.abs(rows - want).max()) < TOLERANCE
    # and the flags really changed something
    assert float(np.abs(want - expected_rows(base)).max()) > 10 * TOLERANCE


def test_every_architecture_of_the_issue_is_registered() -> None:
    wanted = {"llama", "gemma", "gemma2", "gemma3", "qwen2", "qwen3", "phi3", "gpt2", "starcoder2", "olmo2",
              "granite", "bert", "nomic-bert"}
    assert wanted <= set(ARCHITECTURES)
    assert {a for a, _ in synth.MODELS.values()} == wanted


def test_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    b = synth.Builder("mamba", "mamba")
    synth.common(b)
    synth.head(b)
    path = tmp_path / "mamba.gguf"
    b.write(path)
    with pytest.raises(ModelLoadError) as e:
        Model.load(path)
    msg = str(e.value)
    assert "'mamba' is not supported" in msg and "gemma3" in msg and "nomic-bert" in msg


def test_embedding_model_has_no_logits_and_wants_whole_inputs(tmp_path: Path) -> None:
    model = load("bert", tmp_path)
    with pytest.raises(InvalidRequestError, match="no logits"):
        model.decode(Batch([SeqChunk(0, synth.PROMPT[:4], 0, "last")]))
    model.kv.clear()
    model.hidden(Batch([SeqChunk(0, synth.PROMPT[:4], 0, "all")]))
    with pytest.raises(InvalidRequestError, match="whole"):
        model.hidden(Batch([SeqChunk(0, synth.PROMPT[4:8], 4, "all")]))
    # Re-embedding the same sequence replaces its cache instead of failing.
    again = model.hidden(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")]))
    assert float(np.abs(again - expected_rows("bert")).max()) < TOLERANCE


def test_cli_rope_flags_reach_the_model(tmp_path: Path) -> None:
    """`pyllama run/perplexity ... --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 16` = llama.cpp's."""
    import argparse

    from pyllama.cli.common import add_model_args, load_model

    p = argparse.ArgumentParser()
    add_model_args(p)
    path = synth.write_model("qwen2", tmp_path / "qwen2.gguf")
    args = p.parse_args(["-m", str(path), "-c", str(synth.N_CTX), "--weights", "dense", "-ctk", "f32", "-ctv", "f32",
                         "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "16"])
    model = load_model(args)
    rows = model.decode(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")]))
    assert float(np.abs(rows - expected_rows("qwen2-yarn-flags")).max()) < TOLERANCE


@pytest.mark.parametrize(("name", "moves"), [("gpt2", False), ("starcoder2", True), ("gemma3", True)])
def test_context_shift_rerotates_only_rope_keys(name: str, moves: bool, tmp_path: Path) -> None:
    model = load(name, tmp_path)
    model.decode(Batch([SeqChunk(0, synth.PROMPT[:12], 0, "none")]))
    before = [model.kv.keys(i, 0, 12).copy() for i in range(synth.N_LAYER)]
    model.kv.shift(0, 2, 4, model.net.rerotate_keys)
    after = [model.kv.keys(i, 0, 8) for i in range(synth.N_LAYER)]
    for b, a in zip(before, after, strict=True):
        assert np.array_equal(a[:, :2], b[:, :2])
        assert np.allclose(a[:, 2:], b[:, 6:]) != moves
