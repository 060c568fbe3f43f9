"""The model thread: runs the scheduler's synchronous `step()` off the event loop.

The engine is synchronous NumPy code and must not block the event loop, so each loaded
model gets one background thread. Request handlers never touch the scheduler: they post
commands (submit, cancel, or "run this function between steps") and read events from a
per-request `EventStream`, which the thread feeds through `loop.call_soon_threadsafe`.
A stream that falls behind (a slow SSE reader) has its pending partial events merged,
so its backlog stays bounded and the model thread never waits for a client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PENDING_EVENTS = 64


class SchedulerLike(Protocol):
    """What the worker needs from pyllama.scheduler.Scheduler."""

    def submit(self, task: Any, emit: Callable[[Any], None]) -> int: ...

    def cancel(self, task_id: int) -> None: ...

    def step(self) -> bool: ...


class EventStream:
    """Events of one task, readable with `async for` on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        merge: Callable[[Any, Any], Any | None] | None,
        on_crash: Callable[[str], Any] | None = None,
    ) -> None:
        self._loop = loop
        self.on_crash = on_crash  # builds the event that ends this stream if the scheduler crashes
        self._events: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._merge = merge
        self.closed = False
        self.task_id: int | None = None
        self.cancel: Callable[[], None] = lambda: None

    def _push(self, event: Any) -> None:  # on the event loop
        if self._merge is not None and len(self._events) >= MAX_PENDING_EVENTS:
            merged = self._merge(self._events[-1], event)
            if merged is not None:
                self._events[-1] = merged
                self._ready.set()
                return
        self._events.append(event)
        self._ready.set()

    def emit_threadsafe(self, event: Any) -> None:  # on the model thread
        self._loop.call_soon_threadsafe(self._push, event)

    async def next(self) -> Any:
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()


class Worker:
    """One thread driving one scheduler; all scheduler access happens on that thread."""

    def __init__(self, scheduler: SchedulerLike, name: str = "pyllama-model") -> None:
        self.scheduler = scheduler
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Condition()
        self._running = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._live: set[EventStream] = set()  # touched on the model thread only
        # Submissions posted vs. handed to the scheduler: each counter is written by one
        # thread only, so their difference is a safe (if momentary) count of tasks in transit.
        self._n_posted = 0  # event loop
        self._n_handed = 0  # model thread

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout: float = 5.0, fail_message: str | None = None) -> None:
        """Stop the thread; with `fail_message`, first end every open stream with that error
        (a model unloaded under a request: its client gets an ending, not a hang)."""
        if fail_message is not None and self._thread.is_alive():

            def fail_and_stop() -> None:
                self._fail_live(fail_message)
                self._running = False

            self._post(fail_and_stop)
            self._thread.join(timeout)
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def n_busy(self) -> int:
        """Slots running a task (read without stopping the model thread: may be one step old)."""
        return int(getattr(self.scheduler, "n_busy", 0))

    @property
    def n_waiting(self) -> int:
        """Tasks submitted but not yet in a slot: in transit to the model thread, or queued there."""
        queued = getattr(self.scheduler, "queue", ())
        return max(0, self._n_posted - self._n_handed) + len(queued)

    def _post(self, command: Callable[[], None]) -> None:
        with self._wake:
            self._commands.append(command)
            self._wake.notify()

    def _run(self) -> None:
        busy = False
        while True:
            with self._wake:
                while self._running and not self._commands and not busy:
                    self._wake.wait()
                if not self._running:
                    return
                commands = list(self._commands)
                self._commands.clear()
            for command in commands:
                command()
            try:
                busy = self.scheduler.step()
            except Exception:  # a scheduler bug must not kill the thread or hang clients
                log.exception("scheduler step failed")
                self._fail_live("internal error in the scheduler (the server log has the details)")
                busy = False

    def _fail_live(self, message: str) -> None:
        """End every open stream with an error event and drop its task from the scheduler."""
        for stream in list(self._live):
            if stream.task_id is not None:
                with contextlib.suppress(Exception):
                    self.scheduler.cancel(stream.task_id)
            if stream.on_crash is not None:
                stream.emit_threadsafe(stream.on_crash(message))
        self._live.clear()

    # -- API for the event loop ------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run `fn` on the model thread between steps; await its result."""
        future: Future[T] = Future()

        def command() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._post(command)
        return asyncio.wrap_future(future)

    def submit(
        self,
        task: Any,
        merge: Callable[[Any, Any], Any | None] | None = None,
        on_crash: Callable[[str], Any] | None = None,
    ) -> EventStream:
        """Queue `task`; its events arrive on the returned stream. Call stream.cancel() to stop it."""
        stream = EventStream(asyncio.get_running_loop(), merge, on_crash)

        def command() -> None:
            self._n_handed += 1
            if stream.closed:
                return
            self._live.add(stream)
            stream.task_id = self.scheduler.submit(task, stream.emit_threadsafe)

        def cancel() -> None:
            if stream.closed:
                return
            stream.closed = True

            def do_cancel() -> None:
                self._live.discard(stream)
                if stream.task_id is not None:
                    self.scheduler.cancel(stream.task_id)

            self._post(do_cancel)

        stream.cancel = cancel
        self._n_posted += 1
        self._post(command)
        return stream
