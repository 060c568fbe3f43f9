"""The scheduler's LoRA bookkeeping: which adapter scales each slot runs with, and batches of one.

A mixin of pyllama.scheduler.Scheduler. A forward pass applies one set of adapter scales
(pyllama.lora.LoraSet.active), so, like llama-server (server_slot::can_batch_with compares
the slots' LoRA lists), a batch only holds slots whose scales are equal. Where llama-server
lets the first slot's group go first every time, the groups here take turns: the slot
after the last one served picks the next group, so no request waits on another's whole
generation. A slot whose scales change drops its cached prompt (its KV entries were
computed with other weights), as launch_slot_with_task does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyllama import alora
from pyllama.errors import InvalidRequestError

if TYPE_CHECKING:
    from pyllama.engine import Model
    from pyllama.slot import Slot
    from pyllama.tasks import Task

Scales = tuple[float, ...]


class LoraBatching:
    model: Model
    slots: list[Slot]
    _slot_lora: dict[int, Scales]
    _lora_turn: int = 0
    # slot id -> (position where its aLoRA starts applying, the scales before it)
    _alora_switch: dict[int, tuple[int, Scales]]

    def _lora_init(self) -> None:
        self._slot_lora = {}  # the LoRA scales of each slot's cache
        self._alora_switch = {}

    def _task_lora(self, task: Task) -> Scales:
        """The scales a task runs with: its own (`lora` field) or the server-wide ones."""
        lora = self.model.lora
        if lora is None:
            if task.lora:
                raise InvalidRequestError("this model has no LoRA adapters loaded")
            return ()
        if task.lora is None:
            return lora.scales
        if len(task.lora) != len(lora.adapters):
            raise InvalidRequestError(f"expected {len(lora.adapters)} LoRA scales, got {len(task.lora)}")
        return tuple(float(s) for s in task.lora)

    def _lora_begin(self, slot: Slot, task: Task, n_cached: int) -> int:
        """Record the slot's scales for `task`; the prompt tokens it may reuse (0 if the
        scales changed, unless only to aLoRAs; at most up to an aLoRA's switch, pyllama/alora.py)."""
        scales = self._task_lora(task)
        before = self._slot_lora.get(slot.id, scales)
        self._alora_switch.pop(slot.id, None)
        lora = self.model.lora
        if lora is None:
            self._slot_lora[slot.id] = scales
            return n_cached if before == scales else 0
        if before != scales and alora.should_clear_cache(lora.adapters, before, scales):
            n_cached = 0
        try:
            scales, start = alora.plan(lora.adapters, scales, task.prompt)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        if start > 0:
            n_cached = min(n_cached, start - 1)
        if start - 1 > n_cached:  # the prompt before the switch is read without the aLoRA
            self._alora_switch[slot.id] = (start - 1, alora.without(scales, lora.adapters))
        self._slot_lora[slot.id] = scales
        return n_cached

    def _scales_now(self, slot: Slot, default: Scales) -> Scales:
        """The scales of the slot's next tokens: its task's, or the base ones before an aLoRA's switch."""
        switch = self._alora_switch.get(slot.id)
        if switch is not None and slot.n_past < switch[0]:
            return switch[1]
        return self._slot_lora.get(slot.id, default)

    def _lora_cap(self, slot: Slot, budget: int) -> int:
        """At most the prompt tokens before an aLoRA's switch go in one batch (the rest use other scales)."""
        switch = self._alora_switch.get(slot.id)
        if switch is not None and slot.n_past < switch[0]:
            return min(budget, switch[0] - slot.n_past)
        return budget

    def _lora_group(self) -> Scales | None:
        """The scales of this step's batch (also made the model's active ones); None: no adapters."""
        lora = self.model.lora
        if lora is None:
            return None
        n = len(self.slots)
        for k in range(n):
            slot = self.slots[(self._lora_turn + k) % n]
            if slot.busy and slot.task is not None and slot.task.kind == "completion":
                self._lora_turn = (slot.id + 1) % n
                lora.active = self._scales_now(slot, lora.scales)
                return lora.active
        return None

    def _lora_ok(self, slot: Slot, group: Scales | None) -> bool:
        return group is None or self._scales_now(slot, group) == group

    def _lora_use(self, slot: Slot) -> None:
        """Make `slot`'s scales the active ones (an embedding evaluated on its own)."""
        if self.model.lora is not None:
            self.model.lora.active = self._slot_lora.get(slot.id, self.model.lora.scales)
