"""The server's side of the preparation process (asgi/prep_child.py): one persistent child
process per server that parses, templates and tokenizes request bodies of at least
--prep-process-bytes, so that pure-Python preparation never holds this process's GIL
while the model thread generates for other clients.

Small bodies stay in-process (a round trip to the child costs more than they do). The
child is started with the server (spawn: a fresh interpreter, no copy of the model), knows
every served model by its GGUF path and --chat-template (router mode: one vocabulary per
model, loaded on first use), and is bounded:
- one job at a time, at most MAX_WAITING jobs waiting (more: 503 with Retry-After);
- a job that runs longer than PREP_TIMEOUT seconds (or --timeout, if shorter) kills the
  child (503 for that request);
- a child that dies (killed, out of memory) fails only the job it was running, with a
  503 that says so, and is started again for the next one;
- the server's shutdown stops it (SIGTERM, then SIGKILL after a second).
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import pickle
from multiprocessing.connection import Connection
from typing import Any

from quart import request

from asgi.errors import ApiError, Unavailable
from asgi.prep_child import serve
from asgi.prep_protocol import ChildConfig, Job, ModelKey, Reply
from asgi.prompts import check_token_ids
from asgi.registry import Overloaded, ServedModel
from asgi.state import server_state

log = logging.getLogger("asgi.prep")

MAX_WAITING = 8  # jobs queued behind the running one before requests get 503
PREP_TIMEOUT = 120.0  # seconds one job may take (60 MB tokenized at ~6 MB/s: 10 s)


class PrepFailed(Unavailable):
    """The preparation process could not answer (died, timed out, overloaded)."""


class ChildError(ApiError):
    """An error the child raised, answered as the server would have answered it in-process."""

    def __init__(self, status: int, kind: str, message: str, extra: dict[str, Any]) -> None:
        super().__init__(message, **extra)
        self.status, self.type = status, kind


def model_key(served: ServedModel) -> ModelKey:
    return ModelKey(str(served.spec.path), served.spec.chat_template)


class PrepProcess:
    def __init__(self, config: ChildConfig, min_bytes: int, timeout: float = PREP_TIMEOUT) -> None:
        self.config = config
        self.min_bytes = min_bytes
        self.timeout = timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        # One thread talks to the child, so jobs never interleave on the pipe; it waits in
        # send/recv/poll, which release the GIL.
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyllama-prep")
        self.n_waiting = 0
        self.n_jobs = 0
        self.n_restarts = 0

    def wants(self, n_bytes: int) -> bool:
        return self.min_bytes > 0 and n_bytes >= self.min_bytes

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child now (in the background), so that the first large request finds it ready."""
        self._io.submit(self._ensure_started)

    def warm(self, key: ModelKey) -> None:
        """Read a model's vocabulary in the child ahead of the first large request."""
        self._io.submit(self._exchange, pickle.dumps(Job("load", key)), b"")

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            log.warning("request preparation process %d ended (exit code %s): starting a new one",
                        self._proc.pid, self._proc.exitcode)
            self.n_restarts += 1
            self._close()
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=serve, args=(theirs, self.config), name="pyllama-prep", daemon=True)
        proc.start()
        theirs.close()
        self._proc, self._conn = proc, ours

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    def _exchange(self, job: bytes, raw: bytes) -> Reply:
        """One job, on the I/O thread: send it, wait for the answer (or the child's end)."""
        try:
            self._ensure_started()
        except OSError as exc:  # no process could be started (out of memory, process limit)
            log.error("cannot start the request preparation process: %s", exc)
            raise PrepFailed("the request preparation process could not be started: retry later") from None
        conn, proc = self._conn, self._proc
        assert conn is not None
        try:
            conn.send_bytes(job)
            conn.send_bytes(raw)
            if not conn.poll(self.timeout):
                log.error("request preparation took over %.0f s: stopping process %d", self.timeout, proc.pid)
                self._close()
                raise PrepFailed(f"preparing the request took longer than {self.timeout:.0f} s: it was stopped")
            reply: Reply = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            proc.join(1)
            log.error("request preparation process %d died (exit code %s)", proc.pid, proc.exitcode)
            self._close()
            raise PrepFailed("the request preparation process stopped while preparing this request "
                             "(it is being restarted): retry") from None
        self.n_jobs += 1
        return reply

    async def run(self, kind: str, raw: bytes, default: ModelKey, keys: dict[str, ModelKey],
                  fits: dict[ModelKey, tuple[int, int]]) -> Reply:
        """The child's reply to one job; its errors raised as the server's own."""
        if self.n_waiting >= MAX_WAITING:
            raise Overloaded(f"too many large requests are being prepared ({MAX_WAITING} waiting): retry later")
        job = pickle.dumps(Job(kind, default, keys, fits))
        self.n_waiting += 1
        try:
            reply = await asyncio.get_running_loop().run_in_executor(self._io, self._exchange, job, raw)
        finally:
            self.n_waiting -= 1
        if reply.error is not None:
            raise ChildError(*reply.error)
        return reply

    def stop(self) -> None:
        """End the child (the server is stopping): SIGTERM, then SIGKILL if it lingers."""
        self._io.shutdown(wait=False, cancel_futures=True)
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(1)
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        if self._conn is not None:
            self._conn.close()


def make_prep_process(settings: Any) -> PrepProcess | None:
    if settings.prep_process_bytes <= 0:
        return None
    config = ChildConfig(reasoning=settings.reasoning, chat_template_kwargs=dict(settings.chat_template_kwargs),
                         limits=settings.limits, system_prompt=settings.system_prompt or "",
                         nice=int(os.environ.get("PYLLAMA_PREP_NICE", "10")))
    return PrepProcess(config, settings.prep_process_bytes, min(PREP_TIMEOUT, float(settings.timeout)))


async def prepare_in_child(kind: str) -> tuple[Reply, ServedModel] | None:
    """This request's body prepared by the child when it is large enough, else None (the
    route then reads and prepares it in-process). The body's "model" field is resolved
    here as every route resolves it (unknown names: 400; a model not loaded: 503)."""
    state = server_state()
    prep: PrepProcess | None = state.prep
    if prep is None or not prep.wants(request.content_length or 0):
        return None
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    if not prep.wants(len(raw)):
        return None
    registry = state.registry
    keys = {alias: model_key(m) for m in registry.models for alias in m.spec.aliases} if state.settings.multi_model else {}
    fits = {model_key(m): (m.model.n_ctx_seq, m.max_piece_bytes) for m in registry.models if m.model is not None}
    reply = await prep.run(kind, raw, model_key(registry.default), keys, fits)
    served = await registry.get(reply.model)
    if model_key(served) != reply.key:  # the model list changed meanwhile (router mode reload)
        raise Unavailable("the server's model list changed while this request was prepared: retry")
    return reply, served


def reply_tokens(reply: Reply) -> list[int]:
    return array.array("i", reply.tokens).tolist()


def reply_token_lists(reply: Reply) -> list[list[int]] | None:
    """A job's token lists (None: the body had no prompt field), or the error they raised
    (kept until now: in-process, the route's own checks come before it)."""
    if reply.prompt_error is not None:
        raise ChildError(*reply.prompt_error)
    if reply.prompts is None:
        return None
    return [array.array("i", p).tolist() for p in reply.prompts]


def reply_prompts(reply: Reply, n_vocab: int) -> list[list[int]] | None:
    """A completion job's prompts (None: the body had no "prompt"), or the error they raised."""
    prompts = reply_token_lists(reply)
    for p in prompts or []:
        check_token_ids(p, n_vocab)
    return prompts
