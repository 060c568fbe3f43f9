"""Running tasks on a model's worker: collect results, or stream events from several tasks.

Every route that generates goes through here, so cancellation is handled once: when the
client goes away the response generator is closed, the `finally` below cancels every
task it started, and the scheduler frees their slots at its next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from asgi.disconnect import current_watch
from asgi.errors import ApiError, BadRequest, ContextExceeded, NotSupported, Unavailable
from asgi.registry import ServedModel
from asgi.streams import StreamSession
from asgi.worker import EventStream

_ERROR_KIND: dict[str, type[ApiError]] = {"invalid_request": BadRequest, "context": ContextExceeded}


def raise_for_final(final: Any) -> None:
    if final.error is not None:
        kind = _ERROR_KIND.get(final.error_kind, ApiError)
        raise kind(final.error)


def merge_partials(a: Any, b: Any) -> Any | None:
    """Join two pending Partial events of a slow reader into one (never merge a Final)."""
    import dataclasses

    from pyllama.tasks import Partial

    if isinstance(a, Partial) and isinstance(b, Partial):  # b's statistics are the newer ones
        return dataclasses.replace(b, text=a.text + b.text, tokens=[*a.tokens, *b.tokens], probs=[*a.probs, *b.probs])
    return None


def submit(served: ServedModel, task: Any) -> EventStream:
    if served.worker is None:
        if served.state != "ready":
            raise Unavailable(f"model '{served.name}' was unloaded to make room for another; retry")
        raise NotSupported("text generation is not available: this build has no scheduler")
    stream = served.worker.submit(task, merge=merge_partials, on_crash=crash_event)
    watch = current_watch()
    if watch is not None:
        watch.add(stream.cancel)  # cancelled at once if the client hangs up (asgi.disconnect)
    return stream


def crash_event(message: str) -> Any:
    from pyllama.tasks import Final

    return Final(-1, error=message, error_kind="server")


STOPPED = -1  # the index of the event that ends a stopped stream session's response


@dataclass
class Tagged:
    index: int
    event: Any


async def run_all(served: ServedModel, tasks: list[Any]) -> list[Any]:
    """Submit every task, wait for all finals (in task order); errors raise ApiError."""
    from pyllama.tasks import Final

    streams = [submit(served, t) for t in tasks]
    served.active_requests += 1
    try:

        async def final_of(stream: EventStream) -> Any:
            while True:
                event = await stream.next()
                if isinstance(event, Final):
                    return event

        finals = await asyncio.gather(*(final_of(s) for s in streams))
    finally:
        served.active_requests -= 1
        for s in streams:
            s.cancel()
    for final in finals:
        raise_for_final(final)
    return list(finals)


async def stream_all(served: ServedModel, tasks: list[Any]) -> tuple[Tagged, AsyncIterator[Tagged]]:
    """Start the tasks; return the first event (so an early error is a normal HTTP error)
    and an iterator over the rest, each tagged with its task index."""
    from pyllama.tasks import Final

    session = claim_stream({"stream": True})  # X-Conversation-Id: a resumable stream (asgi.streams)
    if session is not None:
        if session.cancelled:
            session.evict()
            raise BadRequest("request cancelled by a stop while the model was loading")
        session.started = True
    try:
        streams = [submit(served, t) for t in tasks]
    except BaseException:
        if session is not None:
            session.evict()
        raise
    queue: asyncio.Queue[Tagged] = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        while True:
            event = await stream.next()
            await queue.put(Tagged(index, event))
            if isinstance(event, Final):
                return

    pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    served.active_requests += 1

    def cleanup() -> None:
        served.active_requests -= 1
        for p in pumps:
            p.cancel()
        for s in streams:
            s.cancel()

    try:
        first = await queue.get()
        if isinstance(first.event, Final):
            raise_for_final(first.event)
    except BaseException:
        cleanup()
        if session is not None:  # failed (or stopped) before streaming: nothing to resume
            session.evict()
        raise
    if session is not None:

        def stop() -> None:  # DELETE /v1/stream, a replacing request, or the detach timeout
            for s in streams:
                s.cancel()
            queue.put_nowait(Tagged(STOPPED, None))  # the response ends as if the generation had

        session.set_canceller(stop)

    async def rest() -> AsyncIterator[Tagged]:
        remaining = len(tasks) - (1 if isinstance(first.event, Final) else 0)
        try:
            while remaining:
                item = await queue.get()
                if item.index == STOPPED:
                    return
                if isinstance(item.event, Final):
                    remaining -= 1
                yield item
        finally:
            cleanup()

    return first, rest()


def claim_stream(body: dict[str, Any]) -> StreamSession | None:
    """The resumable-stream session of a streaming request that names its conversation
    (llama-server's X-Conversation-Id header), created on the first call; None when the
    request does not ask for one. Generating routes call it as soon as the body is read,
    so a hang-up while the model loads no longer cancels the request."""
    from quart import has_request_context, request

    from asgi.state import server_state

    watch = current_watch()
    if watch is not None and watch.session is not None:
        return watch.session
    if body.get("stream") is not True or not has_request_context():
        return None
    conv_id = request.headers.get("X-Conversation-Id", "")
    if not conv_id:
        return None
    session = server_state().streams.create_or_replace(conv_id)
    if watch is not None:
        watch.make_resumable(session)
    return session


async def sse_events(
    first: Tagged, rest: AsyncIterator[Tagged], render: Callable[[Tagged], list[str]], done: str | None
) -> AsyncIterator[str]:
    """Render tagged events as SSE text; an error mid-stream becomes an error event."""
    from asgi.http import sse_event

    try:
        for chunk in render(first):
            yield chunk
        async for item in rest:
            final_error = getattr(item.event, "error", None)
            if final_error is not None:
                kind = _ERROR_KIND.get(item.event.error_kind, ApiError)
                yield sse_event(kind(final_error).to_json())
                return
            for chunk in render(item):
                yield chunk
        if done is not None:
            yield done
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
