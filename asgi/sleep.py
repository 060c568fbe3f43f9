"""--sleep-idle-seconds: unload the model after that long without work, reload it on demand.

llama-server's sleep mode frees the model's memory on an idle server. While asleep,
/health, /props (`"is_sleeping": true`), /models and /metrics still answer, from what was
kept on falling asleep, without waking the model; any route that needs the model
(completions, tokenize, slots, ...) loads it again first (`ModelRegistry.get`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asgi.registry import ModelRegistry, ServedModel

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1


def is_idle(served: ServedModel) -> bool:
    worker = served.worker
    if served.state != "ready" or served.active_requests > 0 or worker is None:
        return False
    return int(worker.n_busy) == 0 and int(worker.n_waiting) == 0


async def sleep_when_idle(registry: ModelRegistry, idle_seconds: int, props: Callable[[ServedModel], dict[str, Any]]) -> None:
    """Run for the server's lifetime (single-model servers only): put the model to sleep
    once it has had no task for `idle_seconds`. `props` builds the /props answer kept for
    the sleeping server."""
    served = registry.default
    busy_at = time.monotonic()
    while True:
        await asyncio.sleep(TICK_SECONDS)
        now = time.monotonic()
        if not is_idle(served):
            busy_at = now
            continue
        if now - max(busy_at, served.last_used) < idle_seconds:
            continue
        try:
            await registry.sleep(served, {**props(served), "is_sleeping": True})
        except Exception:  # never let the sleeper die: the server just stays awake
            log.exception("could not put the model to sleep")
            busy_at = now
