"""SmolLM2's vocabulary as the grammar sees it: token pieces with special tokens as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyllama.gguf_file import read_gguf
from pyllama.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def smollm2_vocab(smollm2_path: Path) -> tuple[list[bytes], frozenset[int]]:
    tok = Tokenizer.from_gguf(read_gguf(smollm2_path))
    return tok.pieces_bytes(), frozenset(tok.eog_ids)
