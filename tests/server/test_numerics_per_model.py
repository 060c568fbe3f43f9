"""Two models of different numerics in one server (--config-file), streamed to at once.

Numerics are a kernel set each model holds (pyllama/kernels), so the server's per-model
worker threads cannot change each other's arithmetic: every stream must give the tokens
the same request gives when nothing else runs. (With the old process-wide switch, 3 of 8
such answers differed.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ServerProcess, start

PROMPTS = ["The capital of France is", "Once upon a time, a small robot"]
MODELS = ["smol-fast", "smol-exact"]


@pytest.fixture(scope="module")
def mixed_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("numerics") / "config.json"
    config.write_text(json.dumps({"models": [
        {"model": str(smollm2_path), "model_alias": "smol-fast", "numerics": "fast", "n_ctx": 512},
        {"model": str(smollm2_path), "model_alias": "smol-exact", "numerics": "exact", "n_ctx": 512},
    ]}))
    yield from start(["--config-file", str(config), "--models-max", "2"], "numerics")


def stream(server: ServerProcess, model: str, prompt: str) -> list[int]:
    """Greedy tokens of one streamed /completion, read event by event as they arrive."""
    body = {"model": model, "prompt": prompt, "n_predict": 6, "temperature": 0, "stream": True,
            "cache_prompt": False, "return_tokens": True}
    tokens: list[int] = []
    with httpx.Client(base_url=server.base_url, timeout=600) as c, c.stream("POST", "/completion", json=body) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                tokens += json.loads(line[len("data: "):]).get("tokens", [])
    return tokens


def test_fast_and_exact_models_streamed_at_once_give_their_tokens_alone(mixed_server: ServerProcess) -> None:
    jobs = [(m, p) for m in MODELS for p in PROMPTS]
    alone = {job: stream(mixed_server, *job) for job in jobs}
    assert all(alone.values()), {job: len(t) for job, t in alone.items()}
    assert alone[("smol-fast", PROMPTS[0])] != alone[("smol-exact", PROMPTS[0])]  # two numerics really served
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = dict(zip(jobs, pool.map(lambda job: stream(mixed_server, *job), jobs), strict=True))
    differ = {job: (alone[job], together[job]) for job in jobs if together[job] != alone[job]}
    assert not differ, f"answers changed when the models ran at once (alone, together): {differ}"
