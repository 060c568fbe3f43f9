"""The scheduler's use of the host-memory prompt cache (llama-server's --cache-ram, --cache-idle-slots).

A mixin of pyllama.scheduler.Scheduler. `_start_cached` wraps the launch of a task in a
slot the way llama-server's get_available_slot and process_single_task do:

- before: if the slot's cached prompt is about to be lost (the slot was taken as least
  recently used, or the new prompt keeps under half of it), save it to the cache
  ("updating prompt cache"), then restore into the slot the cached prompt that suits the
  new task best (pyllama.prompt_cache.PromptCache.best);
- after: with idle-slot caching on, every other idle slot is saved to the cache and, with
  a unified KV cache (--kv-unified), cleared, as llama-server clears it to free room for
  the running slots.

Off (no cache) unless `enable_prompt_cache` is called: the server calls it for --cache-ram
other than 0; the CLI and the browser do not.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyllama.prompt_cache import PromptCache

if TYPE_CHECKING:
    from pyllama.engine import Model
    from pyllama.slot import Slot
    from pyllama.tasks import Emit, Task

log = logging.getLogger("pyllama.scheduler")


class PromptCaching:
    model: Model
    slots: list[Slot]
    slot_prompt_similarity: float
    _slot_lora: dict[int, tuple[float, ...]]
    prompt_cache: PromptCache | None = None
    cache_idle_slots = False
    kv_unified = False

    def _start(self, slot: Slot, task: Task, emit: Emit) -> None:
        raise NotImplementedError

    def enable_prompt_cache(self, limit_mib: int, idle_slots: bool = True, kv_unified: bool = False) -> None:
        """Turn the cache on (`limit_mib` as --cache-ram: MiB, -1 no limit, 0 off), with
        llama-server's messages; its token limit is the model's context size."""
        if limit_mib != 0:
            log.debug("prompt cache is enabled, size limit: %s", "no limit" if limit_mib < 0 else f"{limit_mib} MiB")
            log.debug("use `--cache-ram 0` to disable the prompt cache")
            self.prompt_cache = PromptCache(limit_mib, self.model.n_ctx)
        else:
            self.prompt_cache = None
            log.debug("prompt cache is disabled - use `--cache-ram N` to enable it")
        self.kv_unified = kv_unified
        self.cache_idle_slots = idle_slots
        if idle_slots:
            if self.prompt_cache is None:
                log.warning("--cache-idle-slots requires --cache-ram, disabling")
                self.cache_idle_slots = False
            else:
                log.debug("idle slots will be saved to prompt cache%s upon starting a new task",
                          " and cleared" if kv_unified else "")
                log.debug("__TEST_TAG_CACHE_IDLE_SLOTS_ENABLED__")

    def _slot_tokens(self, slot: Slot) -> list[int]:
        """The tokens the slot's KV cache holds (the last sampled token was never decoded)."""
        return slot.cache_tokens[: self.model.kv.length(slot.id)]

    def _loses_prompt(self, slot: Slot, task: Task) -> bool:
        """llama-server's update_cache: the slot was chosen as least recently used, or the
        new prompt would keep under half of the slot's cached tokens."""
        tokens = self._slot_tokens(slot)
        lcp = slot.common_prefix(task.prompt)
        by_similarity = bool(task.prompt) and task.cache_prompt and lcp > 0 \
            and lcp / len(task.prompt) >= self.slot_prompt_similarity
        if task.id_slot < 0 and not by_similarity:
            return True
        return bool(tokens) and (lcp if by_similarity else 0) / len(tokens) < 0.5

    def _start_cached(self, slot: Slot, task: Task, emit: Emit) -> None:
        cache = self.prompt_cache
        if cache is not None and task.kind == "completion" and self._loses_prompt(slot, task):
            log.debug("updating prompt cache")
            t0 = time.perf_counter()
            self._save_slot_to_cache(cache, slot)
            entry = cache.load(self.model.kv, slot.id, self._slot_tokens(slot), task.prompt)
            if entry is not None:
                slot.cache_tokens = list(entry.tokens)
                self._slot_lora[slot.id] = entry.lora
            cache.update()
            log.debug("prompt cache update took %.2f ms", 1e3 * (time.perf_counter() - t0))
        self._start(slot, task, emit)
        if cache is not None and self.cache_idle_slots:
            for other in self.slots:
                if other.busy:
                    continue
                log.debug("slot %d: saving idle slot to prompt cache", other.id)
                if self._save_slot_to_cache(cache, other):
                    log.debug("slot %d: __TEST_TAG_CACHE_IDLE_SLOT__", other.id)
                    cache.update()
                if self.kv_unified:
                    self.model.kv.truncate(other.id, 0)
                    other.cache_tokens = []

    def _save_slot_to_cache(self, cache: PromptCache, slot: Slot) -> bool:
        lora = self._slot_lora.get(slot.id, ())
        return cache.save(self.model.kv, slot.id, self._slot_tokens(slot), lora)
