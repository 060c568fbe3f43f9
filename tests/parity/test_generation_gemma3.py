"""Gemma 3 270M Q4_K_M (gemma3 arch: Q5_0, Q8_0, Q4_K, Q6_K weights, sliding-window layers)
against llama.cpp's golden greedy completions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyllama.engine import Model
from tests.parity.golden_check import check, completions_for, run_prompt

pytestmark = pytest.mark.parity


@pytest.mark.slow
def test_greedy_top5_matches_llama_cpp(gemma_path: Path, golden_generation: Any) -> None:
    # Every non-head weight runs through the same exact kernels in both weight modes (they
    # are built from the file's blocks), so one mode covers the numerics; dense is faster.
    model = Model.load(gemma_path, weights="dense", n_ctx=256, numerics="exact")
    results = [run_prompt(model, c) for c in completions_for(golden_generation, "gemma")]
    check(results)
