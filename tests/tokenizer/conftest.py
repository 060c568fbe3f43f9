"""Tokenizers of the two real models, loaded once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyllama.gguf_file import read_gguf
from pyllama.tokenizer import Tokenizer

GOLDEN_NAMES = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": "smollm2",
    "gemma-3-270m-Q4_K_M.gguf": "gemma",
}


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(read_gguf(smollm2_path))


@pytest.fixture(scope="session")
def gemma_tok(gemma_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(read_gguf(gemma_path))


@pytest.fixture(scope="session")
def golden_toks(smollm2_tok: Tokenizer, gemma_tok: Tokenizer) -> dict[str, Tokenizer]:
    return {"smollm2": smollm2_tok, "gemma": gemma_tok}
