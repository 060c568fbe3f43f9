"""SmolLM2-135M-Instruct Q4_1 (llama arch) against llama.cpp's golden greedy completions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyllama.engine import Model
from tests.parity.golden_check import check, completions_for, run_prompt

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("weights", ["dense", "packed"])
def test_greedy_top5_matches_llama_cpp(smollm2_path: Path, golden_generation: Any, weights: str) -> None:
    model = Model.load(smollm2_path, weights=weights, n_ctx=256, numerics="exact")
    results = [run_prompt(model, c) for c in completions_for(golden_generation, "SmolLM2")]
    check(results)
