"""The scheduler's speculative steps: draft after a sampled token, verify the drafted batch.

A mixin of pyllama.scheduler.Scheduler, kept in its own module so the step loop stays
readable. `_draft` runs while the batch is built (each generating slot's sampled token plus
its guesses become one chunk that asks for every row's logits); `_verify` runs on those rows:
it samples row after row with the slot's own sampler, exactly as plain decode steps would,
keeps each guess the sampler picked, and stops at the first it did not (that sampled token
is the slot's next token, as after a plain step). The KV cache then forgets the rejected
guesses, so the slot is where it would be without speculation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from pyllama import numerics
from pyllama.speculative import SpecParams, Speculator

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from pyllama.engine import Model
    from pyllama.models import SeqChunk
    from pyllama.slot import Slot


class SpeculativeSteps:
    model: Model
    speculator: Speculator
    spec_default: SpecParams
    n_draft_total: int
    n_draft_accepted_total: int
    n_draft_steps_total: int
    _threads: Callable[[int], AbstractContextManager[None]]

    def _after_logits(self, slot: Slot, logits: np.ndarray[Any, np.dtype[np.float32]], forced: int | None = None) -> bool:
        raise NotImplementedError

    def _spec_params(self, slot: Slot) -> SpecParams:
        task = slot.task
        assert task is not None
        return task.speculative if task.speculative is not None else self.spec_default

    def _spec_begin(self, slot: Slot) -> None:
        """A task starts on the slot (llama-server's common_speculative_begin): forget the last
        task's guessing state; ngram-mod's shared table takes the prompt."""
        task = slot.task
        assert task is not None
        p = self._spec_params(slot)
        self.speculator.begin(slot.id, task.prompt if task.kind == "completion" and p.enabled else None, p)

    def _draft_room(self, n_generating: int) -> int:
        """Guessed tokens one step may add in total: with exact numerics, a batch must stay
        at most EXACT_MAX_ROWS rows for every row to be computed as it would be alone."""
        if self.model.numerics == "exact":
            return max(0, numerics.EXACT_MAX_ROWS - n_generating)
        return 1 << 30

    def _draft(self, slot: Slot, limit: int) -> list[int]:
        """Guesses for the tokens after the slot's sampled token (none if speculation is off)."""
        task = slot.task
        if task is None or task.kind != "completion" or slot.next_token is None:
            return []
        p = self._spec_params(slot)
        if not p.enabled:
            return []
        limit = min(limit, slot.n_ctx - slot.n_past - 2)
        if slot.n_predict >= 0:
            limit = min(limit, slot.n_predict - slot.n_decoded - 1)
        if limit <= 0:
            return []
        t0 = time.perf_counter()
        with self._threads(1):
            draft = self.speculator.draft(slot.id, slot.cache_tokens[: slot.n_past], slot.next_token, p, limit)
        slot.t_predict += time.perf_counter() - t0
        return draft

    def _verify(self, slot: Slot, chunk: SeqChunk, rows: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        """Sample the chunk's rows in order; keep the guesses the sampler picks."""
        draft = chunk.tokens[1:]
        pos = chunk.pos
        slot.cache_tokens = slot.cache_tokens[: pos + 1]  # the sampled token; guesses re-enter as accepted
        slot.n_draft += len(draft)
        self.n_draft_total += len(draft)
        synth = self._spec_params(slot).synth_probs
        n_accepted = 0
        for i in range(len(chunk.tokens)):
            slot.n_past = pos + 1 + i
            forced = self._synth_accept(slot, synth[i], draft[i]) if synth and i < len(draft) else None
            if not self._after_logits(slot, rows[i], forced):
                break
            if i < len(draft) and slot.next_token == draft[i] and (forced is not None or not synth):
                n_accepted += 1
                slot.n_draft_accepted += 1
                continue
            break
        self.n_draft_accepted_total += n_accepted
        self.n_draft_steps_total += 1
        self.model.kv.truncate(slot.id, pos + 1 + n_accepted)
        self.speculator.accepted(slot.id, n_accepted)

    def _synth_accept(self, slot: Slot, p: float, guess: int) -> int | None:
        """Synthetic acceptance (--spec-synth-rates, llama-server's server_sample_and_accept_synth):
        keep `guess` with chance `p`, whatever the model says; a guessed end-of-generation
        token is never kept (it would end the generation early)."""
        assert slot.sampler is not None
        keep = self.speculator.synth_accept(slot.id, slot.sampler.seed, p)
        return guess if keep and guess not in self.model.tokenizer.eog_ids else None
