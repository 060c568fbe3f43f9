"""Embeddings API: every pooling mode and normalisation, against llama.cpp.

Synthetic BERT rows/pooled vectors come from the oracle (expected/*.npz); the SmolLM2
check uses llama-server's golden /embedding output (mean pooling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyllama.embeddings import RankHead, embed, normalize, pool
from pyllama.engine import Model
from pyllama.errors import InvalidRequestError
from tests.conftest import load_golden
from tests.models import synth
from tests.models.test_synthetic import EXPECTED, TOLERANCE, load


def expected(name: str) -> Any:
    return np.load(EXPECTED / f"{name}.npz")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load("bert", tmp_path_factory.mktemp("bert"))


def test_default_pooling_is_the_models_mean(bert: Model) -> None:
    got = embed(bert, synth.PROMPT, normalize_mode=-1)
    assert got.shape == (1, synth.N_EMBD)
    assert float(np.abs(got[0] - expected("bert")["mean"]).max()) < TOLERANCE


def test_rank_runs_the_classifier_head(bert: Model) -> None:
    got = embed(bert, synth.PROMPT, pooling="rank")
    assert got.shape == (1, 1)
    assert abs(float(got[0, 0]) - float(expected("bert")["rank"][0])) < TOLERANCE


@pytest.mark.parametrize("pooling", ["none", "cls", "last"])
def test_row_poolings(bert: Model, pooling: str) -> None:
    rows = expected("bert")["rows"]
    want = {"none": rows, "cls": rows[:1], "last": rows[-1:]}[pooling]
    got = embed(bert, synth.PROMPT, pooling=pooling, normalize_mode=-1)
    assert got.shape == want.shape and float(np.abs(got - want).max()) < TOLERANCE


def test_nomic_mean_pooling(tmp_path: Path) -> None:
    model = load("nomic-bert", tmp_path)
    got = embed(model, synth.PROMPT, normalize_mode=-1)
    assert float(np.abs(got[0] - expected("nomic-bert")["mean"]).max()) < TOLERANCE
    # No classifier head: llama.cpp's RANK pooling reads the first float of the pooled row
    # (the first token on a bidirectional model), unnormalised, instead of failing.
    rank = embed(model, synth.PROMPT, pooling="rank")
    cls = embed(model, synth.PROMPT, pooling="cls", normalize_mode=-1)
    assert rank.shape == (1, 1) and float(abs(rank[0, 0] - cls[0, 0])) < TOLERANCE


def test_normalisations() -> None:
    v = np.array([3.0, -4.0], dtype=np.float32)
    assert np.allclose(normalize(v, 2), [0.6, -0.8])
    assert np.allclose(normalize(v, 1), [3 / 7, -4 / 7])
    assert np.allclose(normalize(v, 0), v * 32760.0 / 4.0)
    assert np.allclose(normalize(v, -1), v)
    p3 = (27 + 64) ** (1 / 3)
    assert np.allclose(normalize(v, 3), v / p3)
    assert np.all(normalize(np.zeros(2, dtype=np.float32), 2) == 0)


def test_bad_requests(bert: Model) -> None:
    with pytest.raises(InvalidRequestError, match="unknown pooling"):
        embed(bert, synth.PROMPT, pooling="max")
    with pytest.raises(InvalidRequestError, match="empty"):
        embed(bert, [])
    with pytest.raises(InvalidRequestError, match="rank"):
        pool(np.zeros((2, 4), dtype=np.float32), "rank")


@pytest.mark.parity
def test_smollm2_mean_embeddings_match_llama_server(smollm2_path: Path) -> None:
    golden = load_golden("embeddings.json")
    model = Model.load(smollm2_path, n_ctx=512, weights="packed", numerics="exact")  # parity with llama-server
    for r in golden["results"]:
        tokens = model.tokenizer.tokenize(r["text"], add_special=True, parse_special=True)
        raw = r["endpoint"].startswith("/embedding ")
        got = embed(model, tokens, pooling="mean", normalize_mode=-1 if raw else 2)[0]
        want = np.asarray(r["first8"])
        cos = float(got[:8] @ want / (np.linalg.norm(got[:8]) * np.linalg.norm(want)))
        assert cos >= 0.999, f"{r['text']!r} ({r['endpoint']}): cosine {cos:.5f}"
        assert abs(float(np.linalg.norm(got)) / r["norm"] - 1.0) < 0.01


def test_rank_reads_the_last_token_on_a_causal_model(bert: Model) -> None:
    """llama-graph's inp_cls for RANK: the first token, the last when attention is causal (Qwen3 rerankers)."""
    assert RankHead.from_model(bert).last_token is False  # BERT is bidirectional: its first token
    hidden = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(pool(hidden, "rank", RankHead(None, None, None, None)), hidden[:1, :1])
    assert np.array_equal(pool(hidden, "rank", RankHead(None, None, None, None, last_token=True)), hidden[-1:, :1])
