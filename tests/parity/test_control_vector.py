"""A control vector against llama-server (tests/golden/control_vector.json, made by
tools/control_vector_golden.py): the same seeded vector file, scale 0.8, layers 3..25,
greedy decoding gives llama-server's tokens, with its top-5 probabilities within 0.01."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyllama.control_vector import apply_control_vector, load_control_vectors
from pyllama.engine import Model
from pyllama.numerics import server_prompt_batches
from tests.parity.control_vector_file import write_parity_vector
from tests.parity.golden_check import PROB_TOLERANCE, log_softmax

pytestmark = pytest.mark.parity

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "control_vector.json").read_text())


def greedy(model: Model, completion: dict[str, Any]) -> tuple[list[int], float]:
    """Greedy tokens for the golden's length, and the worst top-5 probability gap on its path."""
    model.kv.clear(0)
    prompt = list(completion["prompt_ids"])
    for start, end in server_prompt_batches(len(prompt), False, 512):
        logits = model.eval_prompt(prompt[start:end])
    tokens: list[int] = []
    worst = 0.0
    for step, expected in enumerate(completion["tokens"]):
        logp = log_softmax(logits)
        top = completion["completion_probabilities"][step]["top_logprobs"]
        worst = max(worst, *(abs(float(np.exp(logp[t["id"]])) - float(np.exp(t["logprob"]))) for t in top))
        token = int(np.argmax(logits))
        tokens.append(token)
        if token != expected:
            break
        logits = model.eval_prompt([token])
    return tokens, worst


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cvec") / "parity-cvec.gguf"
    assert write_parity_vector(path) == GOLDEN["control_vector"]["sha256"], "not the vector llama-server was given"
    return path


def test_steered_greedy_matches_llama_server(smollm2_path: Path, vector_file: Path) -> None:
    cv = GOLDEN["control_vector"]
    model = Model.load(smollm2_path, n_ctx=256, numerics="exact")
    apply_control_vector(model.net, load_control_vectors([(str(vector_file), cv["scale"])]), *cv["layer_range"])
    report = []
    for c in GOLDEN["completions"]:
        tokens, worst = greedy(model, c)
        report.append((c["prompt"], tokens == c["tokens"], worst))
        assert tokens == c["tokens"], report
        assert worst <= PROB_TOLERANCE, report
    print(report)
    apply_control_vector(model.net, None)  # and without it, the output is another one
    assert all(greedy(model, c)[0] != c["tokens"] for c in GOLDEN["completions"])
