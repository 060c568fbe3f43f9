"""The model list and, in router mode, its management: GET /models and /v1/models,
POST /models/load and /models/unload, GET /models/sse, POST and DELETE /models.

Bodies, statuses and error messages are llama-server's (tools/server/server-models.cpp,
server_models_routes): a single-model server lists its model as a loaded llama-server
does; a router lists every model it knows with its status, the flags it is served with
and, once loaded, its metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, current_app, request

from asgi import hf_cache
from asgi.errors import BadRequest, NotFound
from asgi.http import SSE_HEADERS, json_response, read_json, sse_event
from asgi.registry import ServedModel
from asgi.router import RUNNING, Router, model_info, status_value
from asgi.startup_checks import SettingsError
from asgi.state import server_state

bp = Blueprint("models", __name__)
log = logging.getLogger("asgi.router")

NO_DOWNLOADS = "pyllama never downloads models: put the GGUF file in --models-dir or name it in --models-preset"


def _router() -> Router:
    router = server_state().registry.router
    if not isinstance(router, Router):
        raise NotFound("File Not Found")  # llama-server serves these routes in router mode only
    return router


def _single_entry(served: ServedModel) -> dict[str, Any]:
    status = "loaded" if served.state in ("ready", "sleeping") else served.state
    return {**model_info(served), "status": {"value": status}}


def _router_entry(served: ServedModel) -> dict[str, Any]:
    spec = served.spec
    status: dict[str, Any] = {"value": status_value(served), "args": spec.args}
    if spec.preset_ini:
        status["preset"] = spec.preset_ini
    if served.state == "error":
        status["exit_code"], status["failed"] = 1, True
    entry: dict[str, Any] = {
        "id": served.name, "aliases": spec.aliases[1:], "tags": spec.tags, "object": "model", "owned_by": "llamacpp",
        "created": int(time.time()), "status": status,
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        "source": spec.source or "config_file", "can_remove": spec.source == "cache",
    }
    if served.state in RUNNING and served.model is not None:
        for key, value in model_info(served).items():
            entry.setdefault(key, value)
    return entry


@bp.get("/models")
@bp.get("/v1/models")
async def list_models() -> Response:
    registry = server_state().registry
    router = registry.router
    if isinstance(router, Router):
        if request.args.get("reload") and server_state().settings.router:
            try:
                await router.reload()
            except SettingsError as exc:
                raise BadRequest(f"reloading the models failed: {exc}") from None
        entries = [_router_entry(m) for m in registry.models if not m.spec.hidden]  # hidden: dedup-cache-models
        return json_response({"data": entries, "object": "list"})
    return json_response({
        "models": [
            {"name": m.name, "model": m.name, "modified_at": "", "size": "", "digest": "", "type": "model",
             "description": "", "tags": [""], "capabilities": ["completion"], "parameters": "",
             "details": {"parent_model": "", "format": "gguf", "family": "", "families": [""],
                         "parameter_size": "", "quantization_level": ""}}
            for m in registry.models
        ],
        "object": "list",
        "data": [_single_entry(m) for m in registry.models],
    })


def _named(body: dict[str, Any]) -> ServedModel | None:
    name = body.get("model")
    registry = server_state().registry
    if not isinstance(name, str) or not name:
        return None
    with contextlib.suppress(BadRequest):
        return registry.lookup(name)
    return None


@bp.post("/models/load")
async def load_model() -> Response:
    router = _router()
    served = _named(await read_json(allow_empty=True))
    if served is None:
        raise NotFound("model is not found")
    if served.state in RUNNING:
        raise BadRequest("model is already running")
    router.in_background(router.ensure_ready(served))  # waits its turn if --models-max is reached
    return json_response({"success": True})


@bp.post("/models/unload")
async def unload_model() -> Response:
    router = _router()
    served = _named(await read_json(allow_empty=True))
    if served is None:
        raise BadRequest("model is not found")
    if served.state not in RUNNING:
        raise BadRequest("model is not running")
    router.in_background(router.unload(served))
    return json_response({"success": True})


@bp.post("/models")
async def download_model() -> Response:
    _router()
    body = await read_json(allow_empty=True)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("model must be a non-empty string")
    if _named(body) is not None:
        raise BadRequest(f"model '{name}' already exists")
    raise BadRequest(f"model validation failed, unable to download: {NO_DOWNLOADS}")  # llama-server's words


@bp.delete("/models")
async def delete_model() -> Response:
    """Remove a model of llama-server's download cache: unloaded first if running, then its
    files deleted and its entry dropped (server_models::remove). llama-server answers its
    errors with 500; a name the client got wrong is a 4xx here."""
    router = _router()
    name = request.args.get("model", "")
    if not name:
        raise BadRequest("model must be a non-empty string")
    registry = server_state().registry
    served = next((m for m in registry.models if m.name == name), None)  # by id, not alias
    if served is None:
        raise NotFound(f"model name={name} is not found")
    if served.spec.source != "cache":
        raise BadRequest(f"model name={name} is not removable (not from cache)")
    if served.state in RUNNING:
        await router.unload(served)
    removed = await asyncio.to_thread(hf_cache.remove, name)
    if not removed:
        log.warning("removing model name=%s from disk returned false (no cached files?)", name)
    registry.set_models([m for m in registry.models if m is not served])
    router.notify("model_remove", name, {})
    return json_response({"success": True})


@bp.get("/models/sse")
async def model_events() -> Response:
    """Status events as llama-server sends them: `data: {"model", "event", "data"}` each."""
    router = _router()
    state = server_state()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    router.subscribers.add(queue)

    async def body() -> AsyncIterator[bytes]:
        try:
            while not state.shutting_down:
                try:
                    message = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                yield sse_event(message).encode("utf-8")
        finally:
            router.subscribers.discard(queue)

    response = current_app.response_class(body(), status=200, mimetype="text/event-stream")
    response.timeout = None  # open until the client leaves or the server stops
    for key, val in SSE_HEADERS.items():
        response.headers[key] = val
    return response
