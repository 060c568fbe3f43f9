"""Router mode: which models are loaded, in what order they load, and who hears about it.

llama-server's router (tools/server/server-models.cpp) runs each model in a child process
and proxies requests to it; pyllama loads each model in this process instead (each with
its own worker thread, asgi/worker.py), but answers the same API:

- statuses `unloaded`, `loading`, `loaded` (a failed load is `unloaded` with `failed` and
  `exit_code`), changed by `load`/`unload` and announced to `/models/sse` subscribers
  with llama-server's events (`model_status` when a load starts, `status_change` after);
- at most `--models-max` models running: a request for another one waits in a FIFO
  queue (requests for the same model share one entry, so one eviction serves them all);
  the entry at its head unloads the least recently used model that no request is using
  and no queued request wants, then loads its own (server_lru_sched);
- a model is busy while a request holds it: from the moment the request is routed to it
  (its handler task) until its generation ends, so it is never unloaded under a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quart import has_request_context, request

from asgi.errors import BadRequest, Unavailable
from asgi.metrics import MetricsBook
from asgi.registry import ModelRegistry, ServedModel

log = logging.getLogger("asgi.router")

RUNNING = ("loading", "ready", "sleeping")


@dataclass
class _Entry:
    name: str
    waiters: int = 1
    loading: bool = False


def status_value(served: ServedModel) -> str:
    """llama-server's status names: a model that failed to load is back to `unloaded`."""
    return {"ready": "loaded", "error": "unloaded"}.get(served.state, served.state)


def model_meta(served: ServedModel) -> dict[str, Any]:
    """The GGUF's numbers /models shows (kept while the model sleeps or after it unloads)."""
    if served.model is not None:
        model = served.model
        served.meta_cache = {
            "vocab_type": 2 if model.metadata.get("tokenizer.ggml.model") == "gpt2" else 1,
            "n_vocab": model.n_vocab,
            "n_ctx": model.n_ctx_seq,
            "n_ctx_train": model.config.n_ctx_train,
            "n_embd": model.config.n_embd,
            "n_params": int(sum(t.n_elements for t in model.gguf.tensors.values())),
            "size": served.spec.path.stat().st_size,
            "ftype": str(model.metadata.get("general.file_type", "")),
        }
    if served.meta_cache is not None:
        return served.meta_cache
    try:
        return {"size": served.spec.path.stat().st_size}
    except OSError:
        return {"size": 0}


def model_info(served: ServedModel) -> dict[str, Any]:
    """What a loaded llama-server reports about its model (get_res_model_info)."""
    return {"id": served.name, "aliases": served.spec.aliases, "tags": served.spec.tags, "object": "model",
            "created": served.created, "owned_by": "llamacpp", "meta": model_meta(served)}


class Router:
    """The models' load queue and event feed; one per server in router or --config-file mode."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.queue: list[_Entry] = []
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        # llama.cpp's test hook: a load and every routed request take 2 s longer, so tests can
        # observe the queue with requests that would otherwise end in milliseconds.
        self.fake_timing = bool(os.environ.get("LLAMA_SERVER_DEBUG_FAKE_TIMING"))
        # Each model's own /metrics counters (a llama-server child's: kept while it sleeps,
        # gone when it is unloaded), and the /props a sleeping model answers with; `props_of`
        # builds those (set by create_app: the props route's body).
        self.books: dict[str, MetricsBook] = {}
        self.asleep_props: dict[str, dict[str, Any]] = {}
        self.props_of: Callable[[ServedModel], dict[str, Any]] | None = None

    # -- events ------------------------------------------------------------------------------

    def notify(self, event: str, model: str, data: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"model": model, "event": event}
        if data is not None:
            message["data"] = data
        for queue in list(self.subscribers):
            if queue.qsize() >= 1000:  # a subscriber that stopped reading (or never started)
                self.subscribers.discard(queue)
            else:
                queue.put_nowait(message)
        self.poke()

    def poke(self) -> None:
        """Wake every queued request to look again (a load ended, a model went idle...)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self) -> None:
        # Polls too: a request ending (active_requests back to 0) does not poke.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), 0.1)

    # -- state -------------------------------------------------------------------------------

    @staticmethod
    def busy(served: ServedModel) -> bool:
        served.holders = {t for t in served.holders if not t.done()}
        return served.active_requests > 0 or bool(served.holders)

    def _has_capacity(self, incoming: ServedModel) -> bool:
        running = [m for m in self.registry.models if m.state in RUNNING and m is not incoming]
        if self.settings.models_max > 0 and len(running) >= self.settings.models_max:
            return False
        budget = self.settings.models_memory_mb << 20
        if budget and running:
            try:
                estimate = incoming.spec.path.stat().st_size
            except OSError:
                estimate = 0
            return sum(m.nbytes for m in running) + estimate <= budget
        return True

    def _victim(self) -> ServedModel | None:
        wanted = {e.name for e in self.queue}
        idle = [m for m in self.registry.models
                if m.state in ("ready", "sleeping") and not self.busy(m) and m.name not in wanted]
        return min(idle, key=lambda m: m.last_used, default=None)

    # -- load / unload -----------------------------------------------------------------------

    async def load(self, served: ServedModel) -> None:
        """Load now (the caller checked the capacity); a failure raises Unavailable."""
        if self.fake_timing:
            await asyncio.sleep(2)
        self.notify("model_status", served.name, {"status": "loading"})
        served.last_used = time.monotonic()
        try:
            await served.ensure_loaded()
        except Unavailable:
            self.notify("status_change", served.name, {"status": "unloaded", "exit_code": 1})
            raise
        served.last_used = time.monotonic()
        self.notify("status_change", served.name, {"status": "loaded", "info": model_info(served)})

    async def unload(self, served: ServedModel) -> None:
        """Unload a running model. Requests using it get its `stop-timeout` (10 s) to finish,
        as a llama-server child gets to exit; those still generating then end with an error."""
        deadline = time.monotonic() + served.spec.stop_timeout
        while self.busy(served) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with served._lock:
            if served.state not in RUNNING:
                return
            log.info("unloading %s", served.name)
            if served.scheduler is not None:
                self.registry.metrics_book.retire(served.scheduler.metrics)
            self.books.pop(served.name, None)
            self.asleep_props.pop(served.name, None)
            await asyncio.to_thread(served.unload, "unloaded", f"model '{served.name}' was unloaded")
        self.notify("status_change", served.name, {"status": "unloaded", "exit_code": 0})

    async def sleep_when_idle(self, idle_seconds: int) -> None:
        """--sleep-idle-seconds in router mode: each model sleeps on its own after that long
        without work (as each llama-server child does), status `sleeping`, still counted
        against --models-max; the next request for it wakes it (`acquire`)."""
        from asgi.sleep import TICK_SECONDS, is_idle

        busy_at: dict[str, float] = {}
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for served in list(self.registry.models):
                if not is_idle(served) or self.busy(served):
                    busy_at[served.name] = now
                elif now - max(busy_at.get(served.name, 0.0), served.last_used) >= idle_seconds:
                    try:
                        await self._fall_asleep(served)
                    except Exception:  # never let the sleeper die: the model just stays awake
                        log.exception("could not put %s to sleep", served.name)
                        busy_at[served.name] = now

    async def _fall_asleep(self, served: ServedModel) -> None:
        async with served._lock:
            if served.state != "ready":
                return
            if self.props_of is not None:
                self.asleep_props[served.name] = {**self.props_of(served), "is_sleeping": True}
            if served.scheduler is not None:
                self.book(served).fall_asleep(served)
                self.registry.metrics_book.retire(served.scheduler.metrics)
            await asyncio.to_thread(served.unload, "sleeping")
        log.info("%s is asleep until its next request", served.name)
        self.notify("status_change", served.name, {"status": "sleeping"})

    def in_background(self, work: Any) -> None:
        """Run a load or unload that a /models request asked for, without making it wait."""

        async def run() -> None:
            try:
                await work
            except (Unavailable, BadRequest):
                pass  # the model's status and the event feed already say why
            except Exception:
                log.exception("a model load or unload asked for by /models failed")

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- routing -----------------------------------------------------------------------------

    def book(self, served: ServedModel) -> MetricsBook:
        """`served`'s own metrics, as its llama-server child counts them."""
        return self.books.setdefault(served.name, MetricsBook())

    async def ready_or_asleep(self, served: ServedModel, autoload: bool) -> None:
        """GET /props and /metrics with ?model= (llama-server's proxy_get): an unloaded model
        is loaded when autoload is on (400 "model is not loaded" when off); a sleeping one is
        left asleep, since its child answers these two from what it kept on falling asleep."""
        if has_request_context() and request.args.get("autoload"):
            autoload = request.args["autoload"] in ("true", "1")
        if not autoload and served.state not in RUNNING:
            raise BadRequest("model is not loaded")
        await self.ensure_ready(served)  # returns at once for a sleeping model

    async def acquire(self, served: ServedModel, autoload: bool) -> ServedModel:
        """The model a request was routed to, loaded (or waited for) and marked busy;
        `?autoload=true|false` overrides --models-autoload for one request."""
        await self.ready_or_asleep(served, autoload)
        if served.state == "sleeping":
            await served.ensure_loaded()  # waking up: no load event, no "info" (as llama-server)
            self.asleep_props.pop(served.name, None)
            self.book(served).wake()
            self.notify("status_change", served.name, {"status": "loaded"})
        served.last_used = time.monotonic()
        task = asyncio.current_task()
        served.holders = {t for t in served.holders if not t.done()}
        if task is not None:
            served.holders.add(task)
        if self.fake_timing:
            await asyncio.sleep(2)
        return served

    async def ensure_ready(self, served: ServedModel) -> None:
        """Wait for `served` to be loaded, loading it when its turn in the queue comes."""
        if served.state in ("ready", "sleeping"):
            return
        entry = next((e for e in self.queue if e.name == served.name), None)
        if entry is None:
            entry = _Entry(served.name)
            self.queue.append(entry)
        else:
            entry.waiters += 1
        saw_loading = did_load = False
        try:
            while True:
                if served.state in ("ready", "sleeping"):
                    return
                if served.state == "loading":
                    saw_loading = True
                elif served.state == "error" and (saw_loading or did_load):
                    raise Unavailable(f"model '{served.name}' failed to load: {served.error}")
                elif self.queue and self.queue[0] is entry and not entry.loading:
                    if self._has_capacity(served):
                        entry.loading = True
                        try:
                            did_load = True
                            await self.load(served)
                        finally:
                            entry.loading = False
                        continue
                    victim = self._victim()
                    if victim is not None:
                        log.info("models_max reached: unloading %s (least recently used) for %s",
                                 victim.name, served.name)
                        await self.unload(victim)
                        continue
                await self._wait_change()
        finally:
            entry.waiters -= 1
            if entry.waiters <= 0 and entry in self.queue:
                self.queue.remove(entry)
            self.poke()

    async def reload(self) -> None:
        """GET /models?reload=1: read the models folder and preset file again. A running model
        whose entry changed or went away is unloaded; the others take their new entry."""
        from asgi.presets import router_specs

        values = self.settings.router_values
        specs = await asyncio.to_thread(router_specs, values, values.get("chat_template"))
        old = {m.name: m for m in self.registry.models}
        for spec in specs:  # --lora adapters apply to every model (asgi/settings.py)
            spec.lora = list(self.registry.models[0].spec.lora) if self.registry.models else []
            if self.registry.models:  # and so do --control-vector* (a model of another width fails its load)
                spec.control_vector = self.registry.models[0].spec.control_vector
        fresh = {s.name: s for s in specs}
        for served in old.values():
            if served.state in RUNNING and fresh.get(served.name) != served.spec:
                log.info("reload: unloading %s (its entry changed or was removed)", served.name)
                await self.unload(served)
        models = []
        for spec in specs:
            served = old.get(spec.name) or ServedModel(spec, self.settings, threads=self.registry.threads)
            if served.state not in RUNNING:
                served.spec, served.meta_cache = spec, None
                if served.state == "error":
                    served.state, served.error = "unloaded", ""
            served.spec.hidden = spec.hidden  # dedup-cache-models turned on or off
            models.append(served)
        self.registry.set_models(models)
        self.notify("models_reload", "*")
