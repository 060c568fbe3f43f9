"""Resumable streams, as llama-server's server-stream: a stream survives its client.

A streaming request that carries an `X-Conversation-Id` header gets a session keyed by
that id as soon as its body is read (a new request on the same id replaces, and cancels,
the previous one). From then on a client disconnect no longer cancels the request
(asgi.disconnect holds the hang-up back) - as llama-server's router does for a request
that waits for its model to load - and every SSE byte of the response is also appended to
the session's buffer: the generation runs on into it. Until its tasks are submitted the
session is pending: a reader is told to retry (503), a stop (DELETE) makes the request end
with a 400 instead of generating, and a request that fails before streaming leaves no
session behind. The client reattaches with
`GET /v1/stream?conv_id=ID&from=N`, which replays the buffer from byte N and follows the
live bytes until the end; `POST /v1/streams/lookup` tells it which of its ids have a
session and how many bytes they hold; `DELETE /v1/stream?conv_id=ID` stops one.

llama-server's bounds are kept: 4 MiB per session (older bytes are dropped from the front;
reading from before them is refused) and a finished session is dropped 300 s after its
end. llama-server lets a session nobody reads run to its natural end; here a session left
without any reader for `--stream-detach-timeout` seconds is cancelled and dropped, so an
abandoned stream cannot hold a slot for long, and at most MAX_FINISHED finished sessions
are kept (the oldest go first), so their buffers cannot pile up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

SESSION_TTL_SECONDS = 300  # llama-server's STREAM_SESSION_TTL_SECONDS (finished sessions)
SESSION_MAX_BYTES = 4 * 1024 * 1024  # llama-server's STREAM_SESSION_MAX_BYTES
MAX_FINISHED = 256  # finished sessions kept at most (pyllama's bound; oldest dropped first)
DEFAULT_DETACH_TIMEOUT = 300.0  # a running session without a reader for this long is cancelled


class OffsetLost(Exception):
    """The requested byte offset is older than what the session still holds."""


class StreamSession:
    """One generation's SSE bytes: appended by the producer, read from any offset."""

    def __init__(self, conversation_id: str, max_bytes: int = SESSION_MAX_BYTES) -> None:
        self.conversation_id = conversation_id
        self.started_at = int(time.time())
        self.completed_at = 0  # unix seconds once finished
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.dropped = 0  # bytes cut from the front (the cap)
        self.done = False
        self.cancelled = False
        self.started = False  # its tasks are submitted (before: the model may still be loading)
        self.readers = 0  # attached clients: the original response, and each GET /v1/stream
        self.manager: StreamSessions | None = None
        self.detached_since: float | None = None  # monotonic time the last reader left
        self._cancel: Callable[[], None] | None = None
        self._changed = asyncio.Event()

    @property
    def total_bytes(self) -> int:
        return self.dropped + len(self.buffer)

    def set_canceller(self, cancel: Callable[[], None]) -> None:
        """What stops the producer (its generation) when the session is cancelled."""
        self._cancel = cancel

    def append(self, data: bytes) -> None:
        if self.done or not data:
            return
        if len(data) >= self.max_bytes:
            skip = len(data) - self.max_bytes
            self.dropped += len(self.buffer) + skip
            self.buffer = bytearray(data[skip:])
        else:
            over = len(self.buffer) + len(data) - self.max_bytes
            if over > 0:
                del self.buffer[:over]
                self.dropped += over
            self.buffer += data
        self._wake()

    def finalize(self) -> None:
        if self.done:
            return
        self.done = True
        self.completed_at = int(time.time())
        self._wake()

    def cancel(self) -> None:
        """Stop the producer (and so its generation) and end every reader."""
        if not self.cancelled:
            self.cancelled = True
            if self._cancel is not None and not self.done:
                self._cancel()
        self.finalize()

    def attach(self) -> None:
        self.readers += 1
        self.detached_since = None

    def detach(self) -> None:
        self.readers = max(0, self.readers - 1)
        if self.readers == 0:
            self.detached_since = time.monotonic()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def read_from(self, offset: int) -> AsyncIterator[bytes]:
        """The bytes from `offset` on, live until the session ends (OffsetLost if too old)."""
        while True:
            if offset < self.dropped:
                raise OffsetLost(offset)
            end = self.total_bytes
            if offset < end:
                chunk = bytes(self.buffer[offset - self.dropped:])
                offset = end
                yield chunk
                continue
            if self.done:
                return
            await self._changed.wait()

    def evict(self) -> None:
        """Forget this session (a request that ended before its stream started)."""
        if self.manager is not None:
            self.manager.evict(self)
        self.finalize()

    def to_json(self) -> dict[str, object]:
        """One entry of POST /v1/streams/lookup's answer (llama-server's field names)."""
        return {"conversation_id": self.conversation_id, "is_done": self.done, "total_bytes": self.total_bytes,
                "started_at": self.started_at, "completed_at": self.completed_at}


class StreamSessions:
    """Every live session, by conversation id: one id, at most one session."""

    def __init__(self, detach_timeout: float = DEFAULT_DETACH_TIMEOUT) -> None:
        self.detach_timeout = detach_timeout
        self.sessions: dict[str, StreamSession] = {}

    def create_or_replace(self, conversation_id: str) -> StreamSession:
        fresh = StreamSession(conversation_id)
        fresh.manager = self
        previous = self.sessions.get(conversation_id)
        self.sessions[conversation_id] = fresh
        if previous is not None:
            previous.cancel()
        return fresh

    def get(self, conversation_id: str) -> StreamSession | None:
        return self.sessions.get(conversation_id)

    def lookup(self, ids: list[str]) -> list[StreamSession]:
        """Sessions of the ids asked about: each id matches itself and any `<id>::<model>`."""
        found: list[StreamSession] = []
        for rid in ids:
            prefix = rid + "::"
            found.extend(s for key, s in self.sessions.items()
                         if s.started and (key == rid or key.startswith(prefix)))
        return found

    def evict(self, session: StreamSession) -> None:
        """Forget a session (if it is still the one under its id) and wake its readers."""
        if self.sessions.get(session.conversation_id) is session:
            del self.sessions[session.conversation_id]
        session.finalize()

    def evict_and_cancel(self, conversation_id: str) -> bool:
        session = self.sessions.pop(conversation_id, None)
        if session is None:
            return False
        session.cancel()
        return True

    def collect(self, now_wall: float | None = None, now_mono: float | None = None) -> list[str]:
        """Drop expired sessions; cancel running ones nobody has read for detach_timeout.
        Returns the ids dropped (for the log)."""
        wall = time.time() if now_wall is None else now_wall
        mono = time.monotonic() if now_mono is None else now_mono
        dropped: list[str] = []
        for key, s in list(self.sessions.items()):
            if s.done and s.completed_at and s.completed_at <= wall - SESSION_TTL_SECONDS:
                del self.sessions[key]
                dropped.append(key)
            elif (not s.done and s.readers == 0 and s.detached_since is not None
                  and mono - s.detached_since >= self.detach_timeout):
                del self.sessions[key]
                s.cancel()
                dropped.append(key)
        finished = sorted((s for s in self.sessions.values() if s.done), key=lambda s: s.completed_at)
        for s in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self.sessions[s.conversation_id]
            dropped.append(s.conversation_id)
        return dropped

    def close(self) -> None:
        """Server stop: end every reader."""
        for s in list(self.sessions.values()):
            s.finalize()
        self.sessions.clear()


async def collect_forever(sessions: StreamSessions) -> None:
    """The garbage collector: a few checks per detach timeout (at least once a minute)."""
    import logging

    log = logging.getLogger(__name__)
    interval = min(60.0, max(0.2, sessions.detach_timeout / 4))
    while True:
        await asyncio.sleep(interval)
        for key in sessions.collect():
            log.info("stream session %r dropped (expired or left without a reader)", key)
