"""The models a server serves: loaded on first use, unloaded least-recently-used first.

With one model (`-m`) it is loaded when the server starts, in a thread, and `/health`
answers 503 until it is ready. With `--config-file` every model is listed at once but
loaded only when a request names it; loading more than `--models-max` models, or more
bytes than `--models-memory-mb`, unloads the idle model used longest ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asgi.chat_render import template_for
from asgi.errors import BadRequest, Unavailable
from asgi.metrics import MetricsBook
from asgi.model_specs import ModelSpec
from asgi.prompts import check_text_fits
from asgi.settings import Settings
from asgi.worker import Worker
from pyllama.chat import ChatTemplate
from pyllama.errors import ModelLoadError

if TYPE_CHECKING:
    from pyllama.engine import Model
    from pyllama.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Overloaded(Unavailable):
    """Every slot is busy and --max-queue tasks already wait: 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ServedModel:
    spec: ModelSpec
    settings: Settings
    state: str = "unloaded"  # unloaded | loading | ready | error | sleeping (--sleep-idle-seconds)
    error: str = ""
    model: Model | None = None
    template: ChatTemplate | None = None
    worker: Worker | None = None
    scheduler: Any = None
    last_used: float = 0.0
    created: int = field(default_factory=lambda: int(time.time()))
    active_requests: int = 0
    meta_cache: dict[str, Any] | None = None  # /models "meta", kept while the model sleeps
    holders: set[asyncio.Task[Any]] = field(default_factory=set)  # router mode: requests routed here (asgi/router.py)
    threads: Any = None  # pyllama.cli.blas_threads.BlasThreads, shared by every model of the server
    _max_piece_bytes: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tokenizer(self) -> Tokenizer:
        assert self.model is not None
        return self.model.tokenizer

    def _load_blocking(self) -> None:
        from pyllama.engine import Model, RopeOverrides

        spec = self.spec
        if spec.unavailable:
            raise ModelLoadError(spec.unavailable)
        rope = RopeOverrides.from_flags(spec.rope)
        t0 = time.perf_counter()
        model = Model.load(
            spec.path,
            weights=spec.weights,
            numerics="exact" if spec.numerics == "exact" else "fast",
            n_ctx=spec.n_ctx,
            n_seq=spec.n_parallel,
            n_ubatch=spec.n_ubatch,
            kv_unified=spec.kv_unified,
            cache_type_k=spec.cache_type_k,
            cache_type_v=spec.cache_type_v,
            rope=rope,
            kv_overrides=spec.kv_overrides,
        )
        if spec.lora:
            from pyllama.lora import LoraAdapter, attach_adapters

            attach_adapters(model, [LoraAdapter.read(p) for p, _ in spec.lora], [s for _, s in spec.lora])
        cvec = spec.control_vector
        if cvec.files:
            from pyllama.control_vector import apply_control_vector, load_control_vectors

            apply_control_vector(model.net, load_control_vectors([(str(p), s) for p, s in cvec.files]),
                                 cvec.start, cvec.end)
        warm_up(model, spec.path)
        draft = None
        if self.settings.model_draft is not None:  # -md: same context and slots as the target
            draft = Model.load(self.settings.model_draft, weights=spec.weights, n_ctx=model.n_ctx, n_seq=spec.n_parallel,
                               n_ubatch=spec.n_ubatch, numerics="exact" if spec.numerics == "exact" else "fast",
                               kv_overrides=spec.kv_overrides)  # common_base_params_to_speculative copies them
        tokenizer = model.tokenizer
        self.template = make_template(model, tokenizer, spec.chat_template)
        self.model = model
        self.scheduler = make_scheduler(model, self.spec, self.settings, self.threads, draft)
        if self.scheduler is not None:
            if hasattr(self.scheduler, "token_pieces"):
                self.scheduler.token_pieces()  # grammars need them: build once, here, not on a request
            self.worker = Worker(self.scheduler, name=f"pyllama-{self.name}")
            self.worker.start()
        log.info(
            "loaded %s (%s, %s weights, n_ctx %d, %d slots) in %.1f s",
            spec.path, model.config.arch, model.weights, model.n_ctx, spec.n_parallel, time.perf_counter() - t0,
        )

    @property
    def max_piece_bytes(self) -> int:
        """Bytes in the longest token's text: a prompt longer than n_ctx of these cannot fit."""
        if self._max_piece_bytes == 0 and self.scheduler is not None and hasattr(self.scheduler, "token_pieces"):
            self._max_piece_bytes = max((len(p) for p in self.scheduler.token_pieces()), default=1)
        return self._max_piece_bytes

    def check_text_fits(self, text: str) -> None:
        """A prompt text too long for any tokenization to fit the context: refused before tokenizing."""
        if self.model is not None:
            check_text_fits(text, self.model.n_ctx_seq, self.max_piece_bytes)

    def admit(self, n_tasks: int = 1) -> None:
        """Refuse new work (503) when the request's `n_tasks` tasks (prompts x n_cmpl) do not
        fit beside the busy slots and the waiting tasks within --parallel + --max-queue.

        A request larger than that whole bound (many prompts or embedding inputs) is let in
        only when the server is idle, so it can still be served but never piles up on others.
        Called on the event loop right before the request's tasks are submitted (no await
        in between), so a burst cannot slip past the count."""
        worker = self.worker
        limit = self.settings.queue_limit(self.spec)
        if worker is None or limit < 0:
            return
        waiting, busy = worker.n_waiting, worker.n_busy
        if busy + waiting + n_tasks > self.spec.n_parallel + limit and (busy or waiting):
            log.warning("overloaded: %d busy slots, %d waiting tasks: answering 503", busy, waiting)
            retry = max(1, min(30, waiting // max(1, self.spec.n_parallel)))
            raise Overloaded(
                f"server is busy: all {self.spec.n_parallel} slots are in use and {waiting} tasks are waiting "
                f"(--max-queue {limit}); retry later",
                retry_after=retry,
            )

    async def ensure_loaded(self) -> None:
        async with self._lock:
            if self.state == "ready":
                return
            self.state = "loading"
            try:
                await asyncio.to_thread(self._load_blocking)
            except Exception as exc:
                self.state = "error"
                # Answers name the file, not the folder it sits in (the log keeps the full path).
                self.error = str(exc)
                if self.spec.path.name:
                    self.error = self.error.replace(str(self.spec.path), self.spec.path.name)
                log.error("failed to load %s: %s", self.spec.path, exc)
                raise Unavailable(f"model '{self.name}' failed to load: {self.error}") from None
            self.state = "ready"

    def unload(self, final_state: str = "unloaded", fail_message: str | None = None) -> None:
        if final_state == "sleeping":
            # Sleep holds the model's lock, so nothing reloads it meanwhile; the state changes
            # first because this runs on a thread while routes that trust "ready" keep answering.
            self.state = final_state
        if self.worker is not None:
            self.worker.stop(fail_message=fail_message)
        self.worker = None
        self.scheduler = None
        self.model = None
        self.template = None
        self.state = final_state

    @property
    def nbytes(self) -> int:
        return self.model.weights_nbytes if self.model is not None else 0


def warm_up(model: Model, path: Any) -> None:
    """llama-server's warm-up: one forward pass at load, so a model whose tensors do not fit
    together (say, a wrong shape) fails now, with /health saying why, not on the first request."""
    from pyllama.errors import PyllamaError
    from pyllama.models import Batch, SeqChunk

    if not getattr(model.net, "causal", True):
        return
    token = model.tokenizer.bos_id
    try:
        model.decode(Batch([SeqChunk(0, [token if token is not None and token >= 0 else 0], 0, "last")]))
    except PyllamaError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{path}: the model failed its warm-up run ({type(exc).__name__}: {exc})") from None
    finally:
        model.kv.truncate(0, 0)


def make_template(model: Model, tokenizer: Tokenizer, override: str | None) -> ChatTemplate:
    """The chat template as llama-server resolves it, with the model's BOS/EOS text."""
    return template_for(model.chat_template, model.metadata, tokenizer, override)


def make_scheduler(model: Model, spec: ModelSpec, settings: Settings, threads: Any = None,
                   draft: Model | None = None) -> Any:
    """The engine's scheduler for this model, or None while pyllama has none yet."""
    try:
        from pyllama.scheduler import Scheduler
    except ImportError:
        log.warning("pyllama.scheduler is not available: generation routes will answer 501")
        return None
    scheduler = Scheduler(
        model,
        n_batch=spec.n_batch,
        context_shift=spec.context_shift,
        slot_prompt_similarity=settings.slot_prompt_similarity,
        threads=threads,
        speculative=settings.speculative,
        draft_model=draft,
    )
    scheduler.enable_prompt_cache(settings.cache_ram, settings.cache_idle_slots, spec.kv_unified)
    return scheduler


class RouterHooks(Protocol):
    """What the registry asks of asgi.router.Router (which imports this module, not the reverse)."""

    async def acquire(self, served: ServedModel, autoload: bool) -> ServedModel: ...

    async def ensure_ready(self, served: ServedModel) -> None: ...

    def in_background(self, work: Any) -> None: ...


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        from pyllama.cli.blas_threads import BlasThreads

        # -t/-tb: BLAS's thread count is the process's, so one hook serves every model.
        self.threads = BlasThreads(settings.n_threads, settings.n_threads_batch)
        self.models = [ServedModel(spec, settings, threads=self.threads) for spec in settings.models]
        self._by_name = {alias: m for m in self.models for alias in m.spec.aliases}
        self.metrics_book = MetricsBook()
        # --sleep-idle-seconds: props kept from before the model was unloaded (GET /props while asleep)
        self.asleep_props: dict[str, Any] | None = None
        self.router: RouterHooks | None = None  # set by create_app with several models

    def set_models(self, models: list[ServedModel]) -> None:
        """Router mode's ?reload=1: the new list (running models kept as they are)."""
        self.models = models
        self._by_name = {alias: m for m in models for alias in m.spec.aliases}

    @property
    def is_sleeping(self) -> bool:
        return self.default.state == "sleeping"

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    def lookup(self, name: Any) -> ServedModel:
        """The model a request's "model" field names (a single-model server ignores the field).

        Router mode answers as llama-server's router_validate_model: 400 for a missing or
        unknown name; --config-file falls back to its first model when the field is absent."""
        if not self.settings.multi_model:
            return self.default
        if name is None or name == "":
            if self.settings.router:
                raise BadRequest("model name is missing from the request")
            return self.default
        if isinstance(name, str) and name in self._by_name:
            return self._by_name[name]
        names = ", ".join(m.name for m in self.models)
        raise BadRequest(f"model '{name}' not found (available: {names})")

    async def get(self, name: Any, autoload: bool | None = None) -> ServedModel:
        """The model for a request that needs it loaded: a sleeping model wakes up here; in
        router mode the request may wait for its turn to load it (asgi/router.py)."""
        served = self.lookup(name)
        if self.router is not None:
            return await self.router.acquire(served, self.settings.models_autoload if autoload is None else autoload)
        if served.state == "sleeping":
            await self.wake(served)
        if served.state != "ready":
            if served.state == "error":
                raise Unavailable(f"model failed to load: {served.error}")
            raise Unavailable("Loading model")
        served.last_used = time.monotonic()
        return served

    async def wake(self, served: ServedModel) -> None:
        log.info("waking up: loading %s again", served.name)
        served.last_used = time.monotonic()
        await served.ensure_loaded()
        if served.state == "ready":
            self.metrics_book.wake()
            self.asleep_props = None

    async def sleep(self, served: ServedModel, props: dict[str, Any]) -> None:
        """Unload an idle model until the next request needs it (llama-server's sleep mode)."""
        async with served._lock:
            if served.state != "ready":
                return
            self.asleep_props = props
            self.metrics_book.fall_asleep(served)
            await asyncio.to_thread(served.unload, "sleeping")
        log.info("idle for %d s: %s unloaded until the next request", self.settings.sleep_idle_seconds, served.name)

    async def start(self) -> None:
        """Single-model servers load at startup (in the background: /health says 503 meanwhile);
        in router mode, the presets marked load-on-startup."""
        if self.router is not None:
            for served in self.models:
                if served.spec.load_on_startup:
                    self.router.in_background(self.router.ensure_ready(served))
        elif not self.settings.multi_model:
            # A failure leaves its reason on the model, where /health reports it.
            with contextlib.suppress(Unavailable):
                await self.default.ensure_loaded()

    def stop(self) -> None:
        for served in self.models:
            served.unload()
