"""The model thread's contract with the event loop, on a minimal scheduler implementation.

The worker only needs submit/cancel/step (SchedulerLike); this small scheduler emits a
scripted sequence of events so the threading behaviour (ordering, merging a slow reader's
backlog, crash handling, cancellation, calls between steps) can be checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from asgi.worker import MAX_PENDING_EVENTS, Worker


@dataclass
class Piece:
    text: str


@dataclass
class End:
    text: str


class ScriptedScheduler:
    """Each task is a list of strings; one step emits one piece per live task, then End."""

    def __init__(self, crash_on: str | None = None) -> None:
        self.tasks: dict[int, tuple[list[str], Callable[[Any], None]]] = {}
        self.cancelled: list[int] = []
        self.crash_on = crash_on
        self.thread_ids: set[int] = set()
        self._next = 0

    def submit(self, task: Any, emit: Callable[[Any], None]) -> int:
        self.thread_ids.add(threading.get_ident())
        self._next += 1
        self.tasks[self._next] = (list(task), emit)
        return self._next

    def cancel(self, task_id: int) -> None:
        self.cancelled.append(task_id)
        self.tasks.pop(task_id, None)

    def step(self) -> bool:
        self.thread_ids.add(threading.get_ident())
        for tid, (pieces, emit) in list(self.tasks.items()):
            piece = pieces.pop(0)
            if piece == self.crash_on:
                raise RuntimeError("boom")
            if pieces:
                emit(Piece(piece))
            else:
                emit(End(piece))
                del self.tasks[tid]
        return bool(self.tasks)


def merge(a: Any, b: Any) -> Any | None:
    return Piece(a.text + b.text) if isinstance(a, Piece) and isinstance(b, Piece) else None


async def drain(stream: Any) -> list[Any]:
    events = []
    while True:
        event = await stream.next()
        events.append(event)
        if isinstance(event, End):
            return events


def test_events_arrive_in_order_off_the_event_loop() -> None:
    scheduler = ScriptedScheduler()
    worker = Worker(scheduler)
    worker.start()

    async def run() -> None:
        a = worker.submit(["a1", "a2", "a3"])
        b = worker.submit(["b1", "b2"])
        ea, eb = await asyncio.gather(drain(a), drain(b))
        assert ea == [Piece("a1"), Piece("a2"), End("a3")] and eb == [Piece("b1"), End("b2")]
        assert threading.get_ident() not in scheduler.thread_ids  # the loop never ran the scheduler
        assert await worker.call(lambda: len(scheduler.tasks)) == 0
        with pytest.raises(ZeroDivisionError):
            await worker.call(lambda: 1 // 0)

    try:
        asyncio.run(run())
    finally:
        worker.stop()


def test_slow_reader_backlog_is_merged() -> None:
    n = MAX_PENDING_EVENTS * 3
    worker = Worker(ScriptedScheduler())
    worker.start()

    async def run() -> None:
        stream = worker.submit([f"{i}," for i in range(n)] + ["end"], merge=merge)
        while len(stream._events) < MAX_PENDING_EVENTS + 1:  # do not read: let the backlog build
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert len(stream._events) <= MAX_PENDING_EVENTS + 1
        events = await drain(stream)
        assert "".join(e.text for e in events[:-1]) == "".join(f"{i}," for i in range(n))

    try:
        asyncio.run(run())
    finally:
        worker.stop()


def test_scheduler_crash_ends_open_streams_and_worker_survives() -> None:
    scheduler = ScriptedScheduler(crash_on="bad")
    worker = Worker(scheduler)
    worker.start()

    async def run() -> None:
        stream = worker.submit(["ok", "bad", "never"], on_crash=lambda msg: End("crash: " + msg))
        events = await drain(stream)
        assert events[0] == Piece("ok") and events[-1].text.startswith("crash: internal error in the scheduler")
        again = worker.submit(["fine"])
        assert await drain(again) == [End("fine")]

    try:
        asyncio.run(run())
    finally:
        worker.stop()


def test_cancel_reaches_the_scheduler() -> None:
    scheduler = ScriptedScheduler()
    worker = Worker(scheduler)
    worker.start()

    async def run() -> None:
        stream = worker.submit(["x"] * 10_000)
        await stream.next()
        stream.cancel()
        await worker.call(lambda: None)  # the cancel command ran before this one
        assert scheduler.cancelled == [stream.task_id] and not scheduler.tasks

    try:
        asyncio.run(run())
    finally:
        worker.stop()


def test_merged_partials_keep_the_newest_statistics() -> None:
    """A slow reader's backlog is merged (asgi.generate.merge_partials): text and tokens join,
    and the slot and running timings are those of the later event."""
    from asgi.generate import merge_partials
    from pyllama.scheduler import Final, Partial

    a = Partial(7, "Hel", [1], [], slot_id=1, n_prompt=5, n_decoded=1, prompt_ms=10.0, predicted_ms=0.0)
    b = Partial(7, "lo", [2, 3], [], slot_id=1, n_prompt=5, n_decoded=3, prompt_ms=10.0, predicted_ms=40.0)
    merged = merge_partials(a, b)
    assert isinstance(merged, Partial)
    assert (merged.text, merged.tokens, merged.slot_id, merged.n_decoded) == ("Hello", [1, 2, 3], 1, 3)
    assert merged.timings["predicted_n"] == 3 and merged.timings["predicted_per_token_ms"] == pytest.approx(40 / 2)  # over 2 decode steps: the first token is free
    assert merge_partials(a, Final(7)) is None  # a Final is never merged away
