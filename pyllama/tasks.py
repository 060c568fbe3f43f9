"""The scheduler's vocabulary: a Task going in, Partial and Final events coming out.

These types live apart from pyllama.scheduler so that pyllama.slot (which builds the
events) and the scheduler (which runs the slots) both import them without importing each
other, and so front ends (server, CLI, browser session) can name them without the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pyllama.sampling import SamplingParams
from pyllama.speculative import SpecParams


@dataclass
class TokenProb:
    """A generated token with its probability and the top alternatives (for n_probs)."""

    id: int
    text: str
    raw: bytes
    prob: float
    top: list[tuple[int, str, bytes, float]] = field(default_factory=list)
    post_sampling: bool = False

    def to_json(self) -> dict[str, Any]:
        """llama-server's completion_probabilities entry (logprob form unless post-sampling)."""
        if self.post_sampling:
            return {
                "id": self.id, "token": self.text, "bytes": list(self.raw), "prob": self.prob,
                "top_probs": [{"id": i, "token": t, "bytes": list(b), "prob": p} for i, t, b, p in self.top],
            }
        return {
            "id": self.id, "token": self.text, "bytes": list(self.raw), "logprob": _log(self.prob),
            "top_logprobs": [
                {"id": i, "token": t, "bytes": list(b), "logprob": _log(p)} for i, t, b, p in self.top
            ],
        }


def _log(p: float) -> float:
    return float(np.log(p)) if p > 0 else float("-inf")


TaskKind = Literal["completion", "embedding"]
StopType = Literal["none", "eos", "limit", "word"]


@dataclass
class Task:
    """One generation (or embedding) request, already tokenized and validated."""

    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    n_predict: int = -1
    stop: list[str] = field(default_factory=list)
    n_keep: int = 0
    n_discard: int = 0
    id_slot: int = -1
    cache_prompt: bool = True
    kind: TaskKind = "completion"
    pooling: str = "mean"  # embeddings: none | mean | cls | last
    normalize: int = 2  # embeddings: -1 none, 0 max-abs, 1 taxicab, 2 euclidean, >2 p-norm
    return_progress: bool = False  # emit a Partial with `progress` as the prompt is read
    # Optional per-task grammar/constraint objects live inside params (the sampler builds them).
    id: int = -1
    speculative: SpecParams | None = None  # None: the scheduler's default (the server's flags)
    lora: tuple[float, ...] | None = None  # one scale per LoRA adapter; None: the model's current scales
    cmpl_id: str = ""  # the completion id the client sees (found by POST /v1/chat/completions/control)
    settings: dict[str, Any] | None = None  # the request's generation settings, shown by /slots as `params`


def timings_json(n_prompt: int, n_cached: int, n_decoded: int, prompt_ms: float, predicted_ms: float,
                 draft_n: int = 0, draft_n_accepted: int = 0) -> dict[str, float]:
    """llama-server's `timings` object (server_slot_stats::to_json); draft_n and
    draft_n_accepted only when the task drafted anything, as there."""
    pn, dn = n_prompt - n_cached, n_decoded
    steps = max(0, dn - 1)
    draft = {"draft_n": draft_n, "draft_n_accepted": draft_n_accepted} if draft_n > 0 else {}
    return {
        "cache_n": n_cached,
        "prompt_n": pn,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / pn if pn else 0.0,
        "prompt_per_second": 1e3 / prompt_ms * pn if prompt_ms > 0 else 0.0,
        "predicted_n": dn,
        "predicted_ms": predicted_ms,
        # The first generated token comes from the prompt's last logits and costs no decode
        # step: llama-server's rates are over n - 1 steps (server_slot_stats::n_gen_steps).
        "predicted_per_token_ms": predicted_ms / steps if steps else 0.0,
        "predicted_per_second": 1e3 / predicted_ms * steps if predicted_ms > 0 else 0.0,
        **draft,
    }


@dataclass
class Partial:
    """Newly generated text (already safe to show: no half characters, no partial stop word).

    It also carries the slot and the task's running statistics, so a front end can show
    progress (llama-server's `timings_per_token`) without asking the scheduler.
    """

    task_id: int
    text: str
    tokens: list[int]
    probs: list[TokenProb]
    slot_id: int = -1
    n_prompt: int = 0
    n_cached: int = 0
    n_decoded: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0
    # llama-server's prompt_progress ({total, cache, processed, time_ms}) on a progress event
    progress: dict[str, float] | None = None
    draft_n: int = 0
    draft_n_accepted: int = 0

    @property
    def timings(self) -> dict[str, float]:
        if self.progress is not None:  # the prompt so far: nothing generated yet
            return timings_json(int(self.progress["processed"]), int(self.progress["cache"]), 0, self.prompt_ms, 0.0)
        return timings_json(self.n_prompt, self.n_cached, self.n_decoded, self.prompt_ms, self.predicted_ms,
                            self.draft_n, self.draft_n_accepted)


@dataclass
class Final:
    """The end of a task, with everything llama-server reports about it."""

    task_id: int
    content: str = ""
    # Text not yet sent as a Partial (held back as a possible stop word, then released).
    tail: str = ""
    tokens: list[int] = field(default_factory=list)
    stop_type: StopType = "none"
    stopping_word: str = ""
    truncated: bool = False
    n_prompt: int = 0
    n_cached: int = 0
    n_decoded: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0
    draft_n: int = 0
    draft_n_accepted: int = 0
    seed: int = 0
    slot_id: int = -1
    probs: list[TokenProb] = field(default_factory=list)
    embedding: list[list[float]] | None = None
    error: str | None = None
    error_kind: Literal["invalid_request", "context", "server"] = "server"

    @property
    def timings(self) -> dict[str, float]:
        return timings_json(self.n_prompt, self.n_cached, self.n_decoded, self.prompt_ms, self.predicted_ms,
                            self.draft_n, self.draft_n_accepted)

    def result_fields(self) -> dict[str, Any]:
        """The fields of llama-server's final /completion result that come from the task
        itself (to_json_non_oaicompat), shared by the server's response and the browser
        session's last chunk; the caller adds what it knows (index, model, prompt, ...)."""
        return {
            "tokens_predicted": self.n_decoded,
            "tokens_evaluated": self.n_prompt,
            "truncated": self.truncated,
            "stop_type": self.stop_type,
            "stopped_eos": self.stop_type == "eos",
            "stopped_limit": self.stop_type == "limit",
            "stopped_word": self.stop_type == "word",
            "stopping_word": self.stopping_word,
            "tokens_cached": self.n_cached,
            "timings": self.timings,
        }


Event = Partial | Final
Emit = Callable[[Event], None]
