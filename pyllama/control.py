"""Live control of a running completion (llama-server's SERVER_TASK_TYPE_CONTROL,
POST /v1/chat/completions/control).

A client that streams a chat completion may ask, by the completion's `id`, for an action
on it while it generates. The one action llama.cpp knows is `reasoning_end`: end the
thinking block now, so the model moves on to its answer. That works through the reasoning
budget's state machine (pyllama.sampling.reasoning_budget), which the request must have
armed with `reasoning_control: true`; forcing puts the end tag (after the budget message,
if any) in the next sampled tokens, exactly as a spent budget would.

Run on the model thread between steps (the server's Worker.call), so the slot cannot
change under it. The answers are llama-server's: `{"success": true}`, or `success: false`
with a message, for a completion that is not running or was not armed (a completion that
is not thinking at that moment is not an error: nothing is forced, as in llama.cpp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyllama.slot import Slot

ACTIONS = ("reasoning_end",)


def control_completion(slots: Sequence[Slot], cmpl_id: str, action: str) -> dict[str, Any]:
    """Apply `action` to the running task whose completion id is `cmpl_id`."""
    slot = next((s for s in slots if cmpl_id and s.task is not None and s.task.cmpl_id == cmpl_id), None)
    if slot is None or slot.task is None:
        return {"success": False, "message": "no active completion for this id"}
    if action != "reasoning_end":
        return {"success": False, "message": "unknown control action"}
    if not slot.task.params.reasoning_control:
        return {"success": False, "message": "reasoning control not enabled for this completion"}
    budget = slot.sampler.budget if slot.sampler is not None else None
    if budget is not None:
        budget.force()
    return {"success": True}
