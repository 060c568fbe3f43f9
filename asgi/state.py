"""What every request handler shares: the server's state, reached through the current app.

Kept apart from `asgi.app` (which builds the app and registers the routes) so that routes,
`asgi.http` and `asgi.openapi` can reach the state without importing the module that
imports them: the server's modules form no import cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from asgi.errors import Unavailable
from asgi.registry import ModelRegistry
from asgi.settings import Settings
from asgi.streams import StreamSessions

log = logging.getLogger("asgi")


class ShuttingDown(Unavailable):
    """A request that arrives, or is still running, when the server is stopping."""


@dataclass
class ServerState:
    settings: Settings
    registry: ModelRegistry
    started: float = 0.0
    background: list[asyncio.Task[None]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # Graceful shutdown: requests that generate register their task here, so a stop can
    # wait for them (up to --shutdown-timeout) and then cancel them with a clean ending.
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    shutting_down: bool = False
    cancelling: bool = False
    streams: StreamSessions = field(default_factory=StreamSessions)  # resumable streams
    prep: Any = None  # asgi.prep_process.PrepProcess: large bodies prepared in a child process

    @contextlib.contextmanager
    def tracked(self) -> Any:
        """Mark the current request task as in flight (see `drain`)."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self.inflight.add(task)
        try:
            yield
        finally:
            self.inflight.discard(task)

    async def drain(self, timeout: float) -> None:
        """Stop: let in-flight generations finish for `timeout` seconds, then cancel the rest.

        A cancelled stream ends with an error event (and [DONE] on OpenAI routes), a
        cancelled plain request answers 503: every client sees a well-formed ending."""
        self.shutting_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not self.inflight:
            return
        log.warning("shutdown: cancelling %d in-flight request(s) after %.1f s", len(self.inflight), timeout)
        self.cancelling = True
        for task in list(self.inflight):
            task.cancel("server is shutting down")
        end = loop.time() + 2.0
        while self.inflight and loop.time() < end:
            await asyncio.sleep(0.02)


def server_state() -> ServerState:
    state: ServerState = current_app.extensions["pyllama"]
    return state
