"""Slots and continuous batching: the synchronous `step()` that the server drives.

Every slot is one sequence in the shared KV cache. A step gathers one decode token from
each generating slot plus prompt chunks from slots still reading their prompt, runs ONE
forward pass over all of them, then samples each slot's next token. Requests join and
leave between steps. Nothing here blocks or uses threads: the server calls `step()` from
its worker thread and the browser calls it from its Web Worker loop.

Requests come in through `submit()`/`cancel()`, which only append to a deque, so they are
safe to call from another thread while `step()` runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from pyllama.engine import Model
from pyllama.errors import ContextFullError, InvalidRequestError, PyllamaError
from pyllama.models import Batch, SeqChunk
from pyllama.sampling import Sampler
from pyllama.scheduler_cache import PromptCaching
from pyllama.scheduler_lora import LoraBatching
from pyllama.scheduler_metrics import Metrics
from pyllama.scheduler_spec import SpeculativeSteps
from pyllama.slot import Slot
from pyllama.slot_files import SlotFiles
from pyllama.speculative import DraftModel, SpecParams, Speculator
from pyllama.tasks import (
    Emit,
    Final,
    StopType,
    Task,
)

log = logging.getLogger(__name__)

# The answer for a task that failed on an unexpected error (the log has the traceback).
_FAILED = "internal error while {} this request; other requests are not affected (the server log has the details)"

class Scheduler(SlotFiles, SpeculativeSteps, LoraBatching, PromptCaching):
    """N slots over one model; `step()` advances every busy slot by one forward pass."""

    def __init__(
        self,
        model: Model,
        *,
        n_batch: int = 2048,
        context_shift: bool = True,
        slot_prompt_similarity: float = 0.5,
        n_predict_default: int = -1,
        threads: Callable[[int], contextlib.AbstractContextManager[None]] | None = None,
        speculative: SpecParams | None = None,
        draft_model: Model | None = None,
    ) -> None:
        """`threads`, if given, is entered around every forward pass with the pass's token
        count (the CLI and the server pass pyllama.cli.blas_threads.BlasThreads: -t for one
        token, -tb for more); the engine itself never touches threads."""
        self.model = model
        self.threads = threads
        self.n_batch = max(1, n_batch)
        self.context_shift = context_shift
        self.slot_prompt_similarity = slot_prompt_similarity
        self.n_predict_default = n_predict_default
        self.slots = [Slot(i, model.n_ctx_seq) for i in range(model.n_seq)]
        self._lora_init()  # pyllama.scheduler_lora: each slot's LoRA scales and aLoRA switch
        # speculative decoding (pyllama.scheduler_spec): the server's default, tasks may override it
        self.spec_default = speculative or SpecParams()
        self.speculator = Speculator(DraftModel(draft_model, model) if draft_model is not None else None)
        self.n_draft_total = self.n_draft_accepted_total = self.n_draft_steps_total = 0  # /metrics spec_decode_*
        for slot in self.slots:
            slot.speculative = self.spec_default.enabled
        self.queue: deque[tuple[Task, Emit]] = deque()
        self._cancelled: deque[int] = deque()
        self._next_id = 0
        self.metrics = Metrics()
        self.deferred = 0
        self._pieces: list[bytes] | None = None
        cfg = model.config
        self._swa = any(cfg.is_swa(i) for i in range(cfg.n_layer))

    def token_pieces(self) -> list[bytes]:
        """Every token's text as bytes (special tokens rendered), computed once: grammars need it."""
        if self._pieces is None:
            tok = self.model.tokenizer
            self._pieces = [tok.token_to_piece(i, True) for i in range(self.model.n_vocab)]
        return self._pieces

    def _threads(self, n_tokens: int) -> contextlib.AbstractContextManager[None]:
        return self.threads(n_tokens) if self.threads is not None else contextlib.nullcontext()

    # -- requests (thread-safe: deque appends only) -------------------------------------
    def submit(self, task: Task, emit: Emit) -> int:
        self._next_id += 1
        task.id = self._next_id
        self.queue.append((task, emit))
        return task.id

    def cancel(self, task_id: int) -> None:
        self._cancelled.append(task_id)

    def has_work(self) -> bool:
        return bool(self.queue) or bool(self._cancelled) or any(s.busy for s in self.slots)

    @property
    def n_busy(self) -> int:
        """Slots running a task. Safe to read from another thread (a momentary value)."""
        return sum(1 for s in self.slots if s.busy)

    @property
    def n_waiting(self) -> int:
        """Submitted tasks not yet in a slot (the deferred ones). Safe to read from another thread."""
        return len(self.queue)

    # -- the step -------------------------------------------------------------------
    def step(self) -> bool:
        """Do one round of work; return False when there was nothing to do."""
        self._apply_cancellations()
        self._assign_queued()
        busy = [s for s in self.slots if s.busy]
        if not busy:
            return bool(self.queue)
        for slot in busy:
            if slot.task is not None and slot.task.kind == "embedding":
                try:
                    self._lora_use(slot)
                    self._run_embedding(slot)
                except Exception:
                    self._fail_alone(slot, "embedding")
        batch, owners = self._build_batch()
        batch, owners = self._drop_failing_chunks(batch, owners)
        if not batch.chunks:
            return True
        t0 = time.perf_counter()
        try:
            with self._threads(batch.n_tokens):
                logits = self.model.decode(batch)
        except PyllamaError as exc:
            for slot in owners:
                self._fail(slot, str(exc), "invalid_request")
            return True
        dt = time.perf_counter() - t0
        m = self.metrics
        m.n_decode_total += 1
        m.n_busy_slots_total += len(owners)
        row = 0
        n_tok = batch.n_tokens
        for chunk, slot in zip(batch.chunks, owners, strict=True):
            share = dt * len(chunk.tokens) / n_tok
            if slot.generating:
                slot.t_predict += share
                m.predicted_seconds_total += share
                m.predicted_steps_total += 1
            else:
                slot.t_prompt += share
                slot.n_past = chunk.pos + len(chunk.tokens)
                m.prompt_tokens_total += len(chunk.tokens)
                m.prompt_seconds_total += share
                slot.emit_progress()
            slot.cache_tokens = slot.cache_tokens[: chunk.pos] + chunk.tokens
            m.n_tokens_max = max(m.n_tokens_max, len(slot.cache_tokens))
            if chunk.output == "none":
                continue
            n_rows = len(chunk.tokens) if chunk.output == "all" else 1
            try:
                if chunk.output == "all":  # a sampled token and its guesses (pyllama.scheduler_spec)
                    self._verify(slot, chunk, logits[row : row + n_rows])
                else:
                    self._after_logits(slot, logits[row])
            except Exception:  # a bug in one request's sampling, grammar or text must not end the others
                self._fail_alone(slot, "sampling")
            row += n_rows
        return True

    # -- assignment ----------------------------------------------------------------------
    def _apply_cancellations(self) -> None:
        while self._cancelled:
            tid = self._cancelled.popleft()
            self.queue = deque((t, e) for t, e in self.queue if t.id != tid)
            for slot in self.slots:
                if slot.task is not None and slot.task.id == tid:
                    slot.release()

    def _pick_slot(self, task: Task) -> Slot | None:
        idle = [s for s in self.slots if not s.busy]
        if task.id_slot >= 0:
            if task.id_slot >= len(self.slots):
                raise InvalidRequestError(f"id_slot {task.id_slot} out of range (0..{len(self.slots) - 1})")
            s = self.slots[task.id_slot]
            return None if s.busy else s
        if not idle:
            return None
        if task.cache_prompt and task.prompt:
            best, best_len = None, 0
            for s in idle:
                n = s.common_prefix(task.prompt)
                if n > best_len:
                    best, best_len = s, n
            if best is not None and best_len / len(task.prompt) >= self.slot_prompt_similarity:
                return best
        return min(idle, key=lambda s: s.t_last_used)

    def _assign_queued(self) -> None:
        waiting: deque[tuple[Task, Emit]] = deque()
        while self.queue:
            task, emit = self.queue.popleft()
            try:
                slot = self._pick_slot(task)
            except PyllamaError as exc:
                emit(Final(task.id, error=str(exc), error_kind="invalid_request"))
                continue
            if slot is None:
                waiting.append((task, emit))
                continue
            try:
                self._start_cached(slot, task, emit)  # pyllama.scheduler_cache: --cache-ram
            except PyllamaError as exc:
                kind: Literal["invalid_request", "context"] = (
                    "context" if isinstance(exc, ContextFullError) else "invalid_request"
                )
                emit(Final(task.id, error=str(exc), error_kind=kind, slot_id=slot.id))
                slot.release()
            except Exception:  # e.g. building its grammar: this task fails, the others go on
                log.exception("task %d failed to start", task.id)
                emit(Final(task.id, error=_FAILED.format("setting up"), error_kind="server", slot_id=slot.id))
                slot.release()
        self.queue = waiting
        self.deferred = len(waiting)

    def _start(self, slot: Slot, task: Task, emit: Emit) -> None:
        model = self.model
        if not task.prompt:
            raise InvalidRequestError("the prompt is empty")
        if len(task.prompt) >= slot.n_ctx and task.kind == "completion":
            raise ContextFullError(
                f"the request ({len(task.prompt)} tokens) exceeds the available context size "
                f"({slot.n_ctx} tokens), try increasing it"
            )
        if len(task.prompt) > slot.n_ctx:
            raise ContextFullError(
                f"input ({len(task.prompt)} tokens) is larger than the max context size ({slot.n_ctx} tokens)"
            )
        tok = model.tokenizer
        sampler = None
        if task.kind == "completion":
            sampler = Sampler(
                task.params,
                model.n_vocab,
                eog_ids=tok.eog_ids,
                token_pieces=self.token_pieces(),
                n_ctx=slot.n_ctx,
            )
        n_cached = slot.common_prefix(task.prompt) if task.cache_prompt and task.kind == "completion" else 0
        # Always evaluate at least the last prompt token so there are logits to sample from.
        # The last sampled token of the previous task is in cache_tokens but was never
        # decoded, so the KV cache may hold one token fewer than cache_tokens.
        n_cached = self._lora_begin(slot, task, min(n_cached, len(task.prompt) - 1, model.kv.length(slot.id)))
        model.kv.truncate(slot.id, n_cached)
        slot.begin(task, emit, sampler, n_cached, tok)
        slot.emit_progress()  # llama-server's 0% update, before any prompt token is read
        self.metrics.prompt_tokens_cached_total += n_cached
        self._spec_begin(slot)
        if task.n_predict < 0 and self.n_predict_default >= 0:
            slot.n_predict = self.n_predict_default
        if sampler is not None:
            sampler.accept_prompt(task.prompt)

    # -- batching ------------------------------------------------------------------------
    def _build_batch(self) -> tuple[Batch, list[Slot]]:
        batch = Batch()
        owners: list[Slot] = []
        budget = self.n_batch
        group = self._lora_group()  # one set of LoRA scales per batch
        # Decode tokens first: one per generating slot keeps every stream moving.
        decoding = [s for s in self.slots if s.busy and s.generating and s.next_token is not None
                    and self._lora_ok(s, group)]
        room = self._draft_room(len(decoding))
        for slot in decoding:
            if slot.n_past + 1 > slot.n_ctx:
                self._shift_or_stop(slot)
                if not slot.busy:
                    continue
            assert slot.next_token is not None
            draft = self._draft(slot, min(room, budget - len(decoding)))
            room -= len(draft)
            tokens = [slot.next_token, *draft]
            batch.chunks.append(SeqChunk(slot.id, tokens, slot.n_past, "all" if draft else "last"))
            owners.append(slot)
            slot.n_past += len(tokens)
            budget -= len(tokens)
        for slot in self.slots:
            if budget <= 0:
                break
            if slot.busy and not slot.generating and slot.task is not None and slot.task.kind == "completion" \
                    and self._lora_ok(slot, group):
                prompt = slot.task.prompt
                take = self._prompt_take(len(prompt), slot.n_past, self._lora_cap(slot, budget))
                last = slot.n_past + take == len(prompt)
                batch.chunks.append(SeqChunk(slot.id, prompt[slot.n_past : slot.n_past + take], slot.n_past,
                                             "last" if last else "none"))
                owners.append(slot)
                budget -= take
        return batch, owners

    def _drop_failing_chunks(self, batch: Batch, owners: list[Slot]) -> tuple[Batch, list[Slot]]:
        """Fail the slots whose chunk the cache would refuse, before the forward pass: one
        bad request must not end the other streams batched with it."""
        keep = Batch()
        kept: list[Slot] = []
        for chunk, slot in zip(batch.chunks, owners, strict=True):
            try:
                self.model.kv.reserve(chunk.seq, chunk.pos, len(chunk.tokens))
            except PyllamaError as exc:
                kind: Literal["invalid_request", "context"] = (
                    "context" if isinstance(exc, ContextFullError) else "invalid_request"
                )
                self._fail(slot, str(exc), kind)
                continue
            keep.chunks.append(chunk)
            kept.append(slot)
        return keep, kept

    def _prompt_take(self, n_prompt: int, n_past: int, budget: int) -> int:
        """How many prompt tokens a slot adds to this batch.

        For sliding-window models llama-server ends a prompt batch 4 + n_ubatch and 4 tokens
        before the end of the prompt (to save context checkpoints there; see
        pyllama.numerics.server_prompt_batches). The float rounding of a forward pass
        depends on its batch, so we cut at the same places to produce the same numbers.
        """
        take = min(n_prompt - n_past, budget)
        if self.model.numerics == "fast" and take > 1 and n_past + take == n_prompt:
            # Fast numerics round a row slightly differently in a batch of several rows
            # than alone (BLAS picks other kernels; ~0.005 in a logit on SmolLM2). A prompt
            # that is fully cached re-evaluates only its last token, alone; so the last
            # token always goes alone, one step later, and the same prompt with the same
            # seed gives bit-identical text whether or not it was cached.
            take -= 1
        if self._swa:
            for offset in (4 + self.model.n_ubatch, 4):
                cut = n_prompt - min(self.n_batch, offset)
                if n_past < cut < n_past + take:
                    take = cut - n_past
        return take

    def _shift_or_stop(self, slot: Slot) -> None:
        task = slot.task
        assert task is not None
        if not self.context_shift:
            slot.truncated = True
            self._finish(slot, "limit")
            return
        n_keep = len(task.prompt) if task.n_keep < 0 else task.n_keep
        if self.model.tokenizer.add_bos:
            n_keep += 1
        n_keep = min(slot.n_ctx - 4, n_keep)
        n_left = slot.n_past - n_keep
        n_discard = task.n_discard if task.n_discard else n_left // 2
        n_discard = max(0, min(n_discard, n_left - 1))
        self.model.kv.shift(slot.id, n_keep, n_discard, self.model.net.rerotate_keys)
        slot.cache_tokens = slot.cache_tokens[:n_keep] + slot.cache_tokens[n_keep + n_discard :]
        slot.n_past -= n_discard
        slot.truncated = True

    # -- after the forward pass ---------------------------------------------------------------
    def _after_logits(self, slot: Slot, logits: np.ndarray[Any, np.dtype[np.float32]], forced: int | None = None) -> bool:
        """Sample the slot's next token, or keep `forced` (a synthetic guess); False when it ended."""
        task, sampler = slot.task, slot.sampler
        assert task is not None and sampler is not None
        if not slot.generating:
            slot.generating = True
            slot.t_prompt_done = time.perf_counter()
        if slot.n_predict == 0:  # llama-server: evaluate the prompt into the cache, generate nothing
            self._finish(slot, "limit")
            return False
        try:
            token = sampler.sample(logits)
        except PyllamaError as exc:
            self._fail(slot, str(exc), "invalid_request")
            return False
        token = token if forced is None else forced
        sampler.accept(token, apply_grammar=forced is None)  # llama-server: a synthetic guess skips the grammar
        prob = slot.token_prob(sampler, logits, token)
        is_eog = token in self.model.tokenizer.eog_ids and not task.params.ignore_eos
        if is_eog:
            self._finish(slot, "eos")
            return False
        slot.add_token(token, prob)
        self.metrics.tokens_predicted_total += 1
        if slot.stop.stopped_word is not None:
            self._finish(slot, "word")
            return False
        if slot.n_predict >= 0 and slot.n_decoded >= slot.n_predict:
            self._finish(slot, "limit")
            return False
        if not self.context_shift and slot.n_past + 1 >= slot.n_ctx:
            slot.truncated = True
            self._finish(slot, "limit")
            return False
        slot.next_token = token
        return True

    def _finish(self, slot: Slot, stop_type: StopType) -> None:
        final = slot.final(stop_type)
        emit = slot.emit
        slot.release()
        if emit is not None:
            emit(final)

    def _fail_alone(self, slot: Slot, stage: str) -> None:
        """End one slot's task after an unexpected error in its own work; log the traceback,
        answer without the exception text; every other slot keeps running."""
        log.exception("task %d failed in slot %d (%s)", slot.task.id if slot.task else -1, slot.id, stage)
        try:
            self._fail(slot, _FAILED.format(stage), "server")
        except Exception:
            log.exception("could not end the task in slot %d cleanly", slot.id)
            slot.release()

    def _fail(self, slot: Slot, message: str, kind: Literal["invalid_request", "context", "server"]) -> None:
        emit, tid = slot.emit, slot.task.id if slot.task else -1
        slot.release()
        if emit is not None:
            emit(Final(tid, error=message, error_kind=kind, slot_id=slot.id))

    def _run_embedding(self, slot: Slot) -> None:
        """Embeddings are stateless: evaluate the whole input at once, pool, normalise, release."""
        from pyllama.embeddings import embed_task

        task = slot.task
        assert task is not None
        try:
            with self._threads(len(task.prompt)):
                final = embed_task(self.model, slot.id, task)
        except PyllamaError as exc:
            self._fail(slot, str(exc), "invalid_request")
            return
        self.metrics.count_embedding(len(task.prompt), final.prompt_ms)
        emit = slot.emit
        slot.cache_tokens = []
        slot.release()
        if emit is not None:
            emit(final)
