"""The scheduler's slot files: save, restore and erase a slot's KV cache between steps.

A mixin of pyllama.scheduler.Scheduler (llama-server's POST /slots/{id}?action=...);
the file format is pyllama.slot_store's. Call these from the thread that runs step().
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyllama.errors import InvalidRequestError

if TYPE_CHECKING:
    from pyllama.engine import Model
    from pyllama.slot import Slot


class SlotFiles:
    model: Model
    slots: list[Slot]

    def save_slot(self, slot_id: int, path: Path) -> dict[str, Any]:
        from pyllama.slot_store import save_slot

        slot = self._idle_slot(slot_id)
        t0 = time.perf_counter()
        tokens = slot.cache_tokens[: self.model.kv.length(slot.id)]
        n_written = save_slot(self.model, slot.id, tokens, path)
        return {"id_slot": slot.id, "filename": path.name, "n_saved": len(tokens), "n_written": n_written,
                "timings": {"save_ms": 1e3 * (time.perf_counter() - t0)}}

    def restore_slot(self, slot_id: int, path: Path) -> dict[str, Any]:
        from pyllama.slot_store import load_slot

        slot = self._idle_slot(slot_id)
        t0 = time.perf_counter()
        tokens, n_read = load_slot(self.model, slot.id, path)
        slot.cache_tokens = tokens
        return {"id_slot": slot.id, "filename": path.name, "n_restored": len(tokens), "n_read": n_read,
                "timings": {"restore_ms": 1e3 * (time.perf_counter() - t0)}}

    def erase_slot(self, slot_id: int) -> dict[str, Any]:
        slot = self._idle_slot(slot_id)
        n = self.model.kv.length(slot.id)
        self.model.kv.truncate(slot.id, 0)
        slot.cache_tokens = []
        return {"id_slot": slot.id, "n_erased": n}

    def _idle_slot(self, slot_id: int) -> Slot:
        if not 0 <= slot_id < len(self.slots):
            raise InvalidRequestError(f"invalid slot id {slot_id} (0..{len(self.slots) - 1})")
        slot = self.slots[slot_id]
        if slot.busy:
            raise InvalidRequestError(f"slot {slot_id} is busy")
        return slot
