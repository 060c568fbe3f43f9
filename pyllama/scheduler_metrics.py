"""The scheduler's counters, read by the server's /metrics (asgi.metrics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Metrics:
    """Counters behind /metrics (llama-server's names without the prefix).

    Tokens are counted in the step that processes them (prompt tokens when they go through
    the model, generated tokens when they are sampled), so the counters also include the
    work done for requests that were cancelled half way.
    """

    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    predicted_seconds_total: float = 0.0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    prompt_tokens_cached_total: int = 0  # reused from a slot's cache: no decode
    predicted_steps_total: int = 0  # decode steps of generating slots (tokens minus each task's first)
    n_tokens_max: int = 0  # longest sequence seen (prompt + generation)

    def count_embedding(self, n_prompt: int, prompt_ms: float) -> None:
        """An embedding's forward pass counts as a decode, though nothing is sampled."""
        self.prompt_tokens_total += n_prompt
        self.prompt_seconds_total += prompt_ms / 1e3
        self.n_decode_total += 1
        self.n_busy_slots_total += 1
