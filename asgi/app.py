"""The Quart application: `create_app(settings)` and the module-level `app` Hypercorn imports.

The factory wires what every request passes through, in llama-server's order: CORS
(pre-flight answered without a key, as browsers send none), the API key check
(constant-time; /health and /v1/models stay public), then the route, whose errors all
become the OpenAI error shape here. Routes reach the shared state through
`server_state()`, never through globals, so tests can build as many apps as they like.

`hypercorn asgi.app:app` builds its settings from the environment (LLAMA_ARG_* and
PYLLAMA_SERVER_ARGS) the first time the app is called.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from asgi.errors import ApiError, Unauthorized, error_body
from asgi.http import json_response
from asgi.registry import ModelRegistry, Overloaded
from asgi.settings import Settings, parse_settings
from asgi.state import ServerState, ShuttingDown, server_state
from pyllama.errors import ContextFullError, InvalidRequestError, PyllamaError

log = logging.getLogger("asgi")

PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/models", "/v1/models"})
CORS_METHODS = "GET, POST, DELETE, OPTIONS"


def _origin_is_local(origin: str) -> bool:
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return False
    return host in ("localhost", "127.0.0.1", "::1")


def _cors_origin(settings: Settings) -> str | None:
    origin = request.headers.get("Origin", "")
    if settings.cors_origins == "*":
        return origin or "*"  # llama-server echoes the Origin so credentials work
    if settings.cors_origins == "localhost":
        return origin if origin and _origin_is_local(origin) else None
    return settings.cors_origins


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _key_is_valid(given: str, keys: list[str]) -> bool:
    """Compare against every key, always, in constant time: digests first, so not even the
    key's length leaks through the comparison's timing."""
    given_digest = _digest(given)
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given_digest, _digest(key))
    return ok


def _install_middleware(app: Quart) -> None:
    @app.before_request
    async def preflight_and_auth() -> Response | None:
        settings = server_state().settings
        if request.method == "OPTIONS":
            response = Response("", status=200, mimetype="text/html")
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = "*"
            return response
        if not settings.api_keys or (request.path in PUBLIC_PATHS and request.method in ("GET", "HEAD")):
            return None  # reading the model list is public; POST/DELETE /models (router mode) are not
        if request.method in ("GET", "HEAD") and (request.endpoint or "").startswith("static."):
            return None  # the web UI must load before the user can type a key
        given = request.headers.get("Authorization", "") or request.headers.get("X-Api-Key", "")
        given = given.removeprefix("Bearer ").strip()
        if not given or not _key_is_valid(given, settings.api_keys):
            log.warning("unauthorized request to %s (invalid API key)", request.path)  # never the key itself
            raise Unauthorized("Invalid API Key")
        return None

    @app.before_request
    async def refuse_when_stopping() -> None:
        if server_state().shutting_down and request.path not in PUBLIC_PATHS:
            raise ShuttingDown("server is shutting down")

    @app.after_request
    async def cors_headers(response: Response) -> Response:
        origin = _cors_origin(server_state().settings)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.setdefault("Server", "pyllama")
        return response


def _install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return json_response(exc.to_json(), status=exc.status)

    @app.errorhandler(Overloaded)
    async def overloaded(exc: Overloaded) -> Response:
        return json_response(exc.to_json(), status=503, headers={"Retry-After": str(exc.retry_after)})

    @app.errorhandler(ShuttingDown)
    async def shutting_down(exc: ShuttingDown) -> Response:
        return json_response(exc.to_json(), status=503, headers={"Retry-After": "5", "Connection": "close"})

    @app.errorhandler(InvalidRequestError)
    async def invalid_request(exc: InvalidRequestError) -> Response:
        kind = "exceed_context_size_error" if isinstance(exc, ContextFullError) else "invalid_request_error"
        return json_response({"error": {"code": 400, "message": str(exc), "type": kind}}, status=400)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = "File Not Found" if status == 404 else (exc.description or exc.name)
        if status == 413:
            limit = server_state().settings.max_body_size
            message = f"request body is larger than the server limit of {limit} bytes (--max-body-size)"
        return json_response(error_body(status, message), status=status)

    @app.errorhandler(PyllamaError)
    async def engine_error(exc: PyllamaError) -> Response:
        log.error("engine error on %s: %s", request.path, exc)
        return json_response(error_body(500, str(exc)), status=500)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        # The log keeps the traceback; the answer names nothing of the server's insides
        # (no exception text, no file path).
        log.exception("unhandled error on %s", request.path)
        return json_response(error_body(500, "internal server error (the server log has the details)"), status=500)


def _title_case(name: bytes) -> bytes:
    return b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))


class TitleCaseHeaders:
    """Write response header names as llama-server does (`Content-Type`, not `content-type`).

    HTTP says their case does not matter, but clients that copy headers into a plain dict
    (llama.cpp's own test suite among them) look them up exactly; Quart lower-cases them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_titled(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(_title_case(k), v) for k, v in message.get("headers", [])]}
            await send(message)

        await self.app(scope, receive, send_titled)


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> Quart:
    """A ready-to-serve app for `settings` (models load when serving starts)."""
    from asgi.routes import register_routes

    app = Quart("pyllama", static_folder=None)
    app.asgi_app = TitleCaseHeaders(app.asgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = settings.timeout
    state = ServerState(settings=settings, registry=registry or ModelRegistry(settings))
    router = None
    if settings.multi_model:
        from asgi.router import Router

        state.registry.router = router = Router(state.registry)
    from asgi.prep_process import make_prep_process

    state.prep = make_prep_process(settings)
    app.extensions["pyllama"] = state
    _install_middleware(app)
    _install_error_handlers(app)
    register_routes(app, settings)
    from asgi.openapi import register_openapi

    register_openapi(app)
    from asgi.disconnect import watch_disconnects

    app.asgi_app = watch_disconnects(app.asgi_app)  # type: ignore[method-assign,assignment]
    if settings.api_prefix:
        from asgi.api_prefix import ApiPrefix

        app.asgi_app = ApiPrefix(app.asgi_app, settings.api_prefix)  # type: ignore[method-assign]

    @app.before_serving
    async def start_models() -> None:
        import time

        state.started = time.time()
        if state.prep is not None:  # the child starts now, and reads the first model's vocabulary
            from asgi.prep_process import model_key

            state.prep.start()
            state.prep.warm(model_key(state.registry.default))
        state.background.append(asyncio.create_task(state.registry.start()))
        from asgi.streams import collect_forever

        state.streams.detach_timeout = settings.stream_detach_timeout
        state.background.append(asyncio.create_task(collect_forever(state.streams)))
        if settings.sleep_idle_seconds > 0 and router is not None:
            from asgi.routes.meta import props_body

            router.props_of = lambda served: props_body(state, served)
            state.background.append(asyncio.create_task(router.sleep_when_idle(settings.sleep_idle_seconds)))
        elif settings.sleep_idle_seconds > 0:
            from asgi.routes.meta import props_body
            from asgi.sleep import sleep_when_idle

            state.background.append(asyncio.create_task(sleep_when_idle(
                state.registry, settings.sleep_idle_seconds, lambda served: props_body(state, served))))

    @app.after_serving
    async def stop_models() -> None:
        for task in state.background:
            task.cancel()
        state.streams.close()
        if state.prep is not None:
            await asyncio.to_thread(state.prep.stop)
        await asyncio.to_thread(state.registry.stop)

    return app


class _LazyApp:
    """`hypercorn asgi.app:app`: build the real app from the environment on first use.

    Bad settings fail the ASGI lifespan startup with the one-line reason, so Hypercorn
    stops instead of serving an app that cannot work."""

    def __init__(self) -> None:
        self._app: Quart | None = None
        self._error: str | None = None

    def _get(self) -> Quart | None:
        if self._app is None and self._error is None:
            from asgi.logs import configure_logging
            from asgi.settings import SettingsError

            try:
                settings = parse_settings([], os.environ)
            except SettingsError as exc:
                self._error = f"pyllama-server: error: {exc}"
                log.error("%s", self._error)
                return None
            configure_logging(settings)
            self._app = create_app(settings)
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._get()
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self._error})
        elif scope["type"] == "http":
            body = json.dumps({"error": {"code": 500, "message": self._error, "type": "server_error"}}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})


app = _LazyApp()
