"""asgi.streams' bounds without a server: the 4 MiB cap (oldest bytes dropped, reads from
before them refused), the 300 s TTL of finished sessions, the cap on finished sessions,
and the detach timeout of running ones nobody reads."""

from __future__ import annotations

import asyncio
import time

import pytest

from asgi import streams
from asgi.streams import OffsetLost, StreamSession, StreamSessions


async def read_all(session: StreamSession, offset: int) -> bytes:
    return b"".join([chunk async for chunk in session.read_from(offset)])


def test_the_cap_drops_the_oldest_bytes() -> None:
    s = StreamSession("c", max_bytes=10)
    s.append(b"0123456789")
    s.append(b"abcd")
    assert s.dropped == 4 and s.total_bytes == 14 and bytes(s.buffer) == b"456789abcd"
    s.append(b"X" * 25)  # one chunk over the cap keeps its tail
    assert s.dropped == 29 and bytes(s.buffer) == b"X" * 10
    s.finalize()
    assert asyncio.run(read_all(s, 29)) == b"X" * 10
    with pytest.raises(OffsetLost):
        asyncio.run(read_all(s, 3))


def test_a_reader_follows_live_bytes_until_the_end() -> None:
    async def scenario() -> bytes:
        s = StreamSession("c")
        s.append(b"data: 1\n\n")
        reader = asyncio.create_task(read_all(s, 0))
        await asyncio.sleep(0.01)
        s.append(b"data: 2\n\n")
        await asyncio.sleep(0.01)
        s.finalize()
        s.append(b"late")  # nothing enters a finished session
        return await reader

    assert asyncio.run(scenario()) == b"data: 1\n\ndata: 2\n\n"


def test_collect_ttl_detach_timeout_and_finished_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled: list[str] = []
    m = StreamSessions(detach_timeout=5)
    old = m.create_or_replace("old")
    old.started = True
    old.finalize()
    running = m.create_or_replace("running")
    running.started = True
    running.set_canceller(lambda: cancelled.append("running"))
    running.attach()
    running.detach()
    now, mono = time.time(), time.monotonic()
    assert m.collect(now, mono) == []
    assert m.collect(now + streams.SESSION_TTL_SECONDS + 1, mono + 1) == ["old"]
    assert m.collect(now, mono + 6) == ["running"] and cancelled == ["running"]
    monkeypatch.setattr(streams, "MAX_FINISHED", 3)
    for i in range(5):
        s = m.create_or_replace(f"f{i}")
        s.finalize()
        s.completed_at = int(now) + i
    assert sorted(m.collect(now, mono)) == ["f0", "f1"]
    assert sorted(m.sessions) == ["f2", "f3", "f4"]


def test_replacing_cancels_and_lookup_matches_model_variants() -> None:
    cancelled: list[int] = []
    m = StreamSessions()
    first = m.create_or_replace("conv::org/model")
    first.set_canceller(lambda: cancelled.append(1))
    second = m.create_or_replace("conv::org/model")
    assert cancelled == [1] and first.cancelled and first.done and not second.done
    m.create_or_replace("conversation")
    for s in m.sessions.values():
        s.started = True
    assert [s.conversation_id for s in m.lookup(["conv"])] == ["conv::org/model"]
    assert m.evict_and_cancel("conv::org/model") and not m.evict_and_cancel("conv::org/model")
