"""Abandoned requests: cancel a request's scheduler tasks the moment its client goes away.

Quart notices `http.disconnect` and cancels the request's handler, but that single
cancellation can be lost: when the body completes in the same loop turn as the hang-up
(an HTTP/1.1 FIN right after the body, an HTTP/2 RST_STREAM in the same write), the
`asyncio.wait_for` around Quart's body read (Python 3.11) returns the body and swallows
the cancellation, so the handler goes on to start a generation nobody reads, to its end.

This middleware wraps the ASGI app and watches the receive channel itself from the start
of the request. Every generation registers its event streams (and the task awaiting
them) with the request's `Watch`, found through a context variable that Quart's handler
task inherits. When the client's `http.disconnect` arrives, every registered stream is
cancelled in the scheduler (its slot is free after the next step), the waiting tasks are
cancelled again, and any later attempt to start a task for that request is refused.

A resumable stream (a streaming request with an `X-Conversation-Id`, asgi.streams) is the
exception: its hang-up only detaches the client from the session. The disconnect
is then held back from Quart (which would cancel the handler that drives the generation)
and the response's later bytes are dropped here instead of written to a closed socket;
the generation runs on into the session's buffer, bounded by the session's own limits.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from asgi.streams import StreamSession

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class ClientGone(asyncio.CancelledError):
    """Raised instead of starting work for a request whose client has already hung up."""


class Watch:
    """What one HTTP request has started: cancelled together when its client goes away."""

    def __init__(self) -> None:
        self.gone = False
        self.finished = False  # the response was sent completely: a later disconnect is normal
        self._cancels: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session: StreamSession | None = None  # set once the response is a resumable stream

    def add(self, cancel: Callable[[], None]) -> None:
        """Register a scheduler task's cancel; if the client is already gone, cancel it now.
        A resumable stream's tasks are the session's to stop, not the connection's."""
        if self.session is not None:
            return
        self._cancels.append(cancel)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        if self.gone:
            cancel()
            raise ClientGone("the client closed the connection")

    def make_resumable(self, session: StreamSession) -> None:
        """From now on a hang-up detaches the client instead of cancelling the generation."""
        self.session = session
        session.attach()

    def client_gone(self) -> None:
        if self.gone or self.finished:
            return
        self.gone = True
        if self.session is not None:
            self.session.detach()
            return
        for cancel in self._cancels:
            cancel()
        for task in self._tasks:
            if not task.done():
                task.cancel("the client closed the connection")


_current: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("pyllama_request_watch", default=None)


def current_watch() -> Watch | None:
    """The running request's Watch (None outside a request, e.g. in unit tests)."""
    return _current.get()


def watch_disconnects(app: App) -> App:
    """Wrap an ASGI app so every HTTP request runs with a Watch fed by its receive channel."""

    async def wrapped(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        watch = Watch()
        # What the client has already sent, read before the app starts: a request whose
        # whole body came with its hang-up (an HTTP/2 stream reset in the same write, an
        # HTTP/1.1 FIN right after the body) is dropped here, before Quart builds a request
        # and a handler runs for it. A burst of 1,000 such streams otherwise kept the event
        # loop busy for seconds, and some of their tasks reached the slots meanwhile. A
        # resumable stream's request (X-Conversation-Id) is not: it outlives its client.
        early: list[dict[str, Any]] = [await receive()]
        pending: asyncio.Future[dict[str, Any]] | None = None
        resumable = any(name.lower() == b"x-conversation-id" for name, _ in scope.get("headers", ()))
        if early[0].get("type") == "http.disconnect" and not resumable:
            return
        if not resumable and early[0].get("type") == "http.request" and not early[0].get("more_body", False):
            pending = asyncio.ensure_future(receive())
            await asyncio.sleep(0)  # one loop turn: a message already queued is taken now
            if pending.done() and not pending.cancelled() and pending.exception() is None \
                    and pending.result().get("type") == "http.disconnect":
                return  # the stream is closed: nothing to answer, nothing to run
        token = _current.set(watch)

        async def watched_receive() -> dict[str, Any]:
            nonlocal pending
            if early:
                message = early.pop(0)
            elif pending is not None:
                next_message, pending = pending, None
                message = await next_message
            else:
                message = await receive()
            if message.get("type") == "http.disconnect":
                watch.client_gone()
                if watch.session is not None and not watch.finished:
                    # Quart would cancel the handler that drives the generation: hold the
                    # hang-up until the handler ends (Quart then cancels this wait).
                    await asyncio.Event().wait()
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            if watch.gone and watch.session is not None:
                return  # a detached resumable stream: its bytes go to the session only
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                watch.finished = True
            await send(message)

        try:
            await app(scope, watched_receive, watched_send)
        finally:
            _current.reset(token)
            if pending is not None and not pending.done():  # never handed to the app
                pending.cancel()
            if watch.session is not None and not watch.session.started:
                watch.session.evict()  # the request ended (an error, a stop) before streaming

    return wrapped
