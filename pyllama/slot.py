"""One slot: a sequence in the KV cache and the generation state of the task it serves."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from pyllama.kv_cache import common_prefix
from pyllama.stop_strings import StopMatcher
from pyllama.tasks import Emit, Final, Partial, StopType, Task, TokenProb

if TYPE_CHECKING:
    from pyllama.sampling import Sampler
    from pyllama.tokenizer import Tokenizer

__all__ = ["Slot", "TokenProb", "common_prefix"]


class Slot:
    def __init__(self, slot_id: int, n_ctx: int) -> None:
        self.id = slot_id
        self.n_ctx = n_ctx
        self.cache_tokens: list[int] = []
        self.t_last_used = 0.0
        self.speculative = False  # the scheduler speculates by default (the /slots field)
        self.params_json: dict[str, Any] | None = None  # the current or last task's settings (/slots `params`)
        self.last_prompt = (0, 0)  # the last task's _prompt_counts, shown by /slots once it is done
        self._clear()

    def _clear(self) -> None:
        self.task: Task | None = None
        self.emit: Emit | None = None
        self.sampler: Sampler | None = None
        self.tokenizer: Tokenizer | None = None
        self.generating = False
        self.next_token: int | None = None
        self.n_past = 0
        self.n_cached = 0
        self.n_decoded = 0
        self.n_predict = -1
        self.truncated = False
        self.generated: list[int] = []
        self.probs: list[TokenProb] = []
        self.pending_tokens: list[int] = []
        self.pending_probs: list[TokenProb] = []
        self.stop = StopMatcher([])
        self.decoder: Any = None
        self.t_start = 0.0
        self.t_prompt = 0.0
        self.t_predict = 0.0
        self.t_prompt_done = 0.0
        self.n_draft = 0  # guessed tokens verified, and how many of them the model kept
        self.n_draft_accepted = 0

    @property
    def busy(self) -> bool:
        return self.task is not None

    def common_prefix(self, prompt: list[int]) -> int:
        return common_prefix(self.cache_tokens, prompt)

    def begin(self, task: Task, emit: Emit, sampler: Sampler | None, n_cached: int, tokenizer: Tokenizer) -> None:
        from pyllama.tokenizer import IncrementalDecoder

        self._clear()
        self.task, self.emit, self.sampler, self.tokenizer = task, emit, sampler, tokenizer
        self.params_json = task.settings
        self.n_past = n_cached
        self.n_cached = n_cached
        self.cache_tokens = self.cache_tokens[:n_cached]
        self.n_predict = task.n_predict
        self.stop = StopMatcher(task.stop)
        self.decoder = IncrementalDecoder(tokenizer)
        self.t_start = time.perf_counter()

    def emit_progress(self) -> None:
        """A prompt-progress event, if the task asked for them (llama-server's return_progress)."""
        task = self.task
        if task is None or not task.return_progress or self.emit is None or self.generating:
            return
        self.emit(Partial(
            task.id, "", [], [], slot_id=self.id, n_prompt=len(task.prompt), n_cached=self.n_cached,
            prompt_ms=1e3 * self.t_prompt,
            progress={"total": len(task.prompt), "cache": self.n_cached, "processed": self.n_past,
                      "time_ms": 1e3 * self.t_prompt},
        ))

    def release(self) -> None:
        self.t_last_used = time.perf_counter()
        self.last_prompt = self._prompt_counts()
        self._clear()

    def _prompt_counts(self) -> tuple[int, int]:
        """(prompt tokens evaluated, prompt tokens reused from the cache) of the running task."""
        if self.task is None:
            return self.last_prompt
        return max(0, min(self.n_past, len(self.task.prompt)) - self.n_cached), self.n_cached

    def token_prob(self, sampler: Sampler, logits: np.ndarray[Any, Any], token: int) -> TokenProb | None:
        task, tok = self.task, self.tokenizer
        assert task is not None and tok is not None
        n = task.params.n_probs
        if n <= 0:
            return None

        def entry(i: int, p: float) -> tuple[int, str, bytes, float]:
            raw = tok.token_to_piece(i, special=True)
            return (i, raw.decode("utf-8", errors="replace"), raw, p)

        if task.params.post_sampling_probs:
            top = [entry(i, p) for i, p in sampler.post_sampling_probs(n)]
            p_tok = sampler.last_token_post_prob()
        else:
            top = [entry(i, p) for i, p in sampler.probs(logits, n)]
            p_tok = sampler.token_prob(logits, token)
        _, text, raw, _ = entry(token, p_tok)
        return TokenProb(token, text, raw, p_tok, top, task.params.post_sampling_probs)

    def add_token(self, token: int, prob: TokenProb | None) -> None:
        """Record a generated token; emit whatever text became safe to show."""
        self.generated.append(token)
        self.cache_tokens.append(token)
        self.n_decoded += 1
        self.pending_tokens.append(token)
        if prob is not None:
            self.probs.append(prob)
            self.pending_probs.append(prob)
        piece = self.decoder.feed(token)
        text = self.stop.feed(piece) if piece else ""
        if text and self.emit is not None and self.task is not None:
            self.emit(Partial(
                self.task.id, text, self.pending_tokens, self.pending_probs, slot_id=self.id,
                n_prompt=len(self.task.prompt), n_cached=self.n_cached, n_decoded=self.n_decoded,
                prompt_ms=1e3 * self.t_prompt, predicted_ms=1e3 * self.t_predict,
                draft_n=self.n_draft, draft_n_accepted=self.n_draft_accepted,
            ))
            self.pending_tokens, self.pending_probs = [], []

    def final(self, stop_type: StopType) -> Final:
        task = self.task
        assert task is not None
        if stop_type != "word":
            rest = self.decoder.flush() if self.decoder is not None else ""
            if rest:
                self.stop.feed(rest)
        tail = self.stop.flush() if stop_type != "word" else ""
        now = time.perf_counter()
        return Final(
            task.id,
            content=self.stop.text,
            tail=tail,
            tokens=list(self.generated),
            stop_type=stop_type,
            stopping_word=self.stop.stopped_word or "",
            truncated=self.truncated,
            n_prompt=len(task.prompt),
            n_cached=self.n_cached,
            n_decoded=self.n_decoded,
            prompt_ms=1e3 * self.t_prompt,
            predicted_ms=1e3 * (self.t_predict if self.t_predict else max(0.0, now - self.t_prompt_done)),
            draft_n=self.n_draft,
            draft_n_accepted=self.n_draft_accepted,
            seed=self.sampler.seed if self.sampler is not None else 0,
            slot_id=self.id,
            probs=list(self.probs),
        )

    def info(self) -> dict[str, Any]:
        """The /slots entry."""
        task = self.task
        # llama-server shows the running task's prompt counts and params, or the last one's on an idle slot
        params: dict[str, Any] = {}
        if self.params_json is not None:
            processed, cached = self._prompt_counts()
            params = {"n_prompt_tokens": len(self.cache_tokens), "n_prompt_tokens_processed": processed,
                      "n_prompt_tokens_cache": cached, "params": self.params_json}
        return {
            "id": self.id,
            "id_task": task.id if task else -1,
            "n_ctx": self.n_ctx,
            "speculative": self.speculative,
            "is_processing": self.busy,
            "n_past": self.n_past,
            "n_cached_tokens": len(self.cache_tokens),
            # a list of one, as llama-server writes it; an idle slot shows no budget of its last task
            "next_token": [{
                "has_next_token": self.busy,
                "has_new_line": False,
                "n_remain": (self.n_predict - self.n_decoded) if self.busy and self.n_predict >= 0 else -1,
                "n_decoded": self.n_decoded if self.busy else 0,
                "stopping_word": self.stop.stopped_word or "",
            }],
            **params,
        }


