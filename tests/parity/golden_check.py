"""Greedy decoding against llama.cpp's golden completions (tests/golden/generation.json).

The bar (issues 2 and 4): from each prompt's `prompt_ids`, greedy decoding reproduces
llama-server's first 16 tokens, and at every step the probabilities of llama.cpp's top-5
tokens are within 0.01 of ours. The prompt is evaluated in the batches llama-server uses and every generated token on
its own, because ggml picks kernels (and so roundings) by batch size: for models with a
sliding-window cache llama-server stops the prompt batch 4 tokens (and 4 + n_ubatch
tokens) before the end to take a context checkpoint (server-context.cpp,
checkpoint_offsets), so the last 4 prompt tokens go through the model as their own batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pyllama.engine import Model
from pyllama.numerics import server_prompt_batches

N_STEPS = 16
PROB_TOLERANCE = 0.01
N_UBATCH = 512


@dataclass
class PromptResult:
    prompt: str
    tokens: list[int]
    expected: list[int]
    max_prob_diff: float
    worst_step: int


def log_softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    z: np.ndarray[Any, Any] = logits.astype(np.float64)
    z -= z.max()
    out: np.ndarray[Any, Any] = z - np.log(np.exp(z).sum())
    return out


def run_prompt(model: Model, completion: dict[str, Any]) -> PromptResult:
    """Greedy-decode N_STEPS tokens and measure the top-5 probability gap at each step."""
    model.kv.clear(0)
    cfg = model.config
    swa = any(cfg.is_swa(i) for i in range(cfg.n_layer))
    prompt = list(completion["prompt_ids"])
    for start, end in server_prompt_batches(len(prompt), swa, N_UBATCH):
        logits = model.eval_prompt(prompt[start:end])
    tokens: list[int] = []
    worst, worst_step = 0.0, -1
    for step in range(N_STEPS):
        logp = log_softmax(logits)
        golden = completion["completion_probabilities"][step]["top_logprobs"]
        diff = max(abs(float(np.exp(logp[t["id"]])) - float(np.exp(t["logprob"]))) for t in golden)
        if diff > worst:
            worst, worst_step = diff, step
        token = int(np.argmax(logits))
        tokens.append(token)
        if token != completion["tokens"][step]:
            break  # the golden path diverged; later steps would compare different contexts
        logits = model.eval_prompt([token])
    return PromptResult(completion["prompt"], tokens, completion["tokens"][:N_STEPS], worst, worst_step)


def completions_for(golden: dict[str, Any], model_prefix: str) -> list[dict[str, Any]]:
    found = [c for c in golden["completions"] if c["model"].startswith(model_prefix)]
    assert found, f"no golden completions for {model_prefix}"
    return found


def check(results: list[PromptResult]) -> None:
    report = "\n".join(
        f"{r.prompt[:32]!r}: max prob diff {r.max_prob_diff:.5f} (step {r.worst_step}), "
        f"tokens {'ok' if r.tokens == r.expected else f'{r.tokens} != {r.expected}'}"
        for r in results
    )
    print(report)
    for r in results:
        assert r.tokens == r.expected, report
        assert r.max_prob_diff <= PROB_TOLERANCE, report
