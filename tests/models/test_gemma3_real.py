"""Gemma 3 270M (Q4_K_M, the real model) through gemma3.py: it loads, and greedy decoding
follows llama-server's golden continuation. Exact top-5 parity (0.01) is tracked by the
numerics work; this test pins what the architecture file must already get right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyllama.engine import Model
from pyllama.models import Batch, SeqChunk


class Greedy:
    def sample(self, logits: Any) -> int:
        return int(np.argmax(logits))

    def accept(self, token: int) -> None:
        pass


@pytest.mark.slow
@pytest.mark.parity
def test_gemma3_270m_greedy_follows_llama_cpp(gemma_path: Path, golden_generation: Any) -> None:
    case = next(c for c in golden_generation["completions"] if "gemma" in c["model"] and "France" in c["prompt"])
    model = Model.load(gemma_path, n_ctx=64)
    assert model.config.arch == "gemma3" and model.config.sliding_window == 512
    assert model.config.swa_layers[:6] == (True, True, True, True, True, False)
    ids = model.tokenizer.tokenize(case["prompt"], add_special=True, parse_special=True)
    assert ids == case["prompt_ids"]
    gold = case["tokens"][:4]
    # Teacher-forced (one batch): each next-token argmax is llama.cpp's greedy choice. (Token 5,
    # " country", is a near-tie that flips with matmul rounding: the numerics work's business.)
    logits = model.decode(Batch([SeqChunk(0, ids + gold[:-1], 0, "all")]))
    assert logits[len(ids) - 1 :].argmax(axis=1).tolist() == gold
    # Free-running from there, the continuation reads as text.
    got = list(model.generate(ids, Greedy(), 4))
    assert model.tokenizer.detokenize(got) == " the capital of the"
