"""Server and model state: /health, /props, /slots, /metrics (the model list: asgi/routes/models.py)."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, request

from asgi.errors import BadRequest, NotSupported, Unavailable
from asgi.http import json_response, read_json
from asgi.params import parse_completion_params
from asgi.registry import ServedModel
from asgi.responses import BUILD_INFO
from asgi.router import Router
from asgi.state import ServerState, server_state

bp = Blueprint("meta", __name__)


def slot_counts(served: ServedModel) -> tuple[int, int]:
    total = served.spec.n_parallel
    busy = int(getattr(served.scheduler, "n_busy", 0)) if served.scheduler is not None else 0
    return total - busy, busy


@bp.get("/health")
@bp.get("/v1/health")
async def health() -> Response:
    state = server_state()
    served = state.registry.default
    if not state.settings.multi_model:
        if served.state == "error":
            return json_response({"status": "error", "error": {"code": 500, "message": served.error,
                                                                "type": "server_error"}}, status=500)
        if served.state not in ("ready", "sleeping"):
            return json_response({"status": "loading model", "error": {"code": 503, "message": "Loading model",
                                                                        "type": "unavailable_error"}}, status=503)
    elif state.settings.router:
        return json_response({"status": "ok"})  # as llama-server's router: each model's state is in /models
    else:
        # --config-file: models load on first use; one that failed answers 500 here until a
        # later request loads it, so a load balancer stops sending work to this server.
        failed = [m for m in state.registry.models if m.state == "error"]
        if failed:
            message = "; ".join(f"model '{m.name}' failed to load: {m.error}" for m in failed)
            return json_response({"status": "error", "error": {"code": 500, "message": message,
                                                                "type": "server_error"}}, status=500)
    if served.state != "ready":
        return json_response({"status": "ok", "slots_idle": served.spec.n_parallel, "slots_processing": 0})
    idle, busy = slot_counts(served)
    body: dict[str, Any] = {"status": "ok", "slots_idle": idle, "slots_processing": busy}
    if "include_slots" in request.args and state.settings.slots and served.worker is not None:
        body["slots"] = await served.worker.call(lambda: [slot.info() for slot in served.scheduler.slots])
    if idle == 0:
        body["status"] = "no slot available"
        if "fail_on_no_slot" in request.args:
            return json_response(body, status=503)
    return json_response(body)


def default_generation_settings(state: ServerState, served: ServedModel) -> dict[str, Any]:
    assert served.model is not None
    params = parse_completion_params(
        {}, defaults=state.settings.sampling, n_vocab=served.model.n_vocab, n_parallel=served.spec.n_parallel,
        tokenize=lambda text: served.tokenizer.tokenize(text, False, False),
    )
    params.speculative = state.settings.speculative
    settings = params.generation_settings(served.model.n_ctx_seq, served.name)
    speculative = bool(state.settings.speculative is not None and state.settings.speculative.enabled)
    return {"id": 0, "id_task": -1, "n_ctx": served.model.n_ctx_seq, "speculative": speculative,
            "is_processing": False, "params": settings, **settings}


@bp.get("/props")
async def get_props() -> Response:
    state = server_state()
    if state.registry.is_sleeping and state.registry.asleep_props is not None:
        return json_response(state.registry.asleep_props)  # answering must not wake the model
    if state.settings.router and not request.args.get("model"):
        # router mode: the router's own props (--config-file keeps its first model's, which
        # the web UI, sending no "model", talks to)
        return json_response(router_props(state))
    served = state.registry.lookup(request.args.get("model"))
    router = state.registry.router
    if state.settings.router and isinstance(router, Router):
        # llama-server's proxy_get: load it if autoload allows, never wake it
        await router.ready_or_asleep(served, state.settings.models_autoload)
        if served.state == "sleeping" and served.name in router.asleep_props:
            return json_response(router.asleep_props[served.name])
    if served.state != "ready":
        served = await state.registry.get(request.args.get("model"))
    # a ready model is read without marking it used: polling /props must not keep it awake
    return json_response(props_body(state, served))


def router_props(state: ServerState) -> dict[str, Any]:
    """GET /props of llama-server's router: its settings, and placeholders the web UI reads."""
    return {"role": "router", "max_instances": state.settings.models_max,
            "models_autoload": state.settings.models_autoload, "model_alias": "llama-server", "model_path": "none",
            "default_generation_settings": {"params": {}, "n_ctx": 0}, "ui_settings": {}, "build_info": BUILD_INFO,
            "cors_proxy_enabled": state.settings.ui_mcp_proxy}


def props_body(state: ServerState, served: ServedModel) -> dict[str, Any]:
    assert served.model is not None and served.template is not None
    template = served.template
    return {
        "default_generation_settings": default_generation_settings(state, served),
        "total_slots": served.spec.n_parallel,
        "model_alias": served.name,
        "model_path": str(served.spec.path),
        "modalities": {"vision": False, "audio": False, "video": False},
        "endpoint_slots": state.settings.slots,
        "endpoint_props": state.settings.props,
        "endpoint_metrics": state.settings.metrics,
        "webui": state.settings.static_path is not None,
        "chat_template": template.source,
        "chat_template_caps": template.caps.to_json(),
        "bos_token": template.bos_token,
        "eos_token": template.eos_token,
        "build_info": BUILD_INFO,
        "is_sleeping": False,
        "system_prompt": state.settings.system_prompt,
        "assistant_name": "",
        "user_name": "",
        "cors_proxy_enabled": state.settings.ui_mcp_proxy,
        # pyllama: -t/-tb and what each BLAS runs now (threadpoolctl, read in this process)
        "threads": served.threads.props() if served.threads is not None else None,
    }


@bp.post("/props")
async def post_props() -> Response:
    state = server_state()
    body = await read_json(allow_empty=True) if state.settings.router else {}
    if state.settings.router:  # llama-server's router routes it by "model" before the model sees it
        await state.registry.get(body.get("model"))
    if not state.settings.props:
        raise NotSupported("This server does not support changing global properties. Start it with `--props`")
    body = body or await read_json(allow_empty=True)
    if "system_prompt" in body:
        if not isinstance(body["system_prompt"], str):
            raise BadRequest("Field 'system_prompt': type must be string")
        state.settings.system_prompt = body["system_prompt"]
    return json_response({"success": True})


@bp.get("/slots")
async def slots() -> Response:
    state = server_state()
    served = await state.registry.get(request.args.get("model")) if state.settings.router else None
    if not state.settings.slots:
        raise NotSupported("This server does not support slots endpoint. Start it with `--slots`")
    served = served or await state.registry.get(request.args.get("model"))
    if served.worker is None or served.scheduler is None:
        raise NotSupported("slots are not available: this build has no scheduler")
    scheduler = served.scheduler
    n_ctx = served.model.n_ctx_seq if served.model is not None else 0

    def collect() -> list[dict[str, Any]]:
        out = []
        for slot in scheduler.slots:
            info = dict(slot.info())
            info.setdefault("n_ctx", n_ctx)
            info["model"] = served.name
            out.append(info)
        return out

    data = await served.worker.call(collect)
    if "fail_on_no_slot" in request.args and not any(not s.get("is_processing") for s in data):
        raise Unavailable("no slot available")
    return json_response(data)


@bp.get("/metrics")
async def metrics() -> Response:
    state = server_state()
    router = state.registry.router
    served: ServedModel | None = None
    if state.settings.router and isinstance(router, Router):
        # llama-server's router proxies /metrics to the ?model= child (loaded first, as any
        # routed request, even to answer 501): that model's counters, kept while it sleeps
        # (answering does not wake it), gone once it is unloaded
        served = state.registry.lookup(request.args.get("model"))
        await router.ready_or_asleep(served, state.settings.models_autoload)
    if not state.settings.metrics:
        raise NotSupported("This server does not support metrics endpoint. Start it with `--metrics`")
    if served is not None and isinstance(router, Router):
        ready = served.scheduler is not None and served.model is not None
        text = router.book(served).scrape([served] if ready else [])
    else:
        loaded = [m for m in state.registry.models if m.scheduler is not None and m.model is not None]
        text = state.registry.metrics_book.scrape(loaded)  # never wakes a sleeping model
    response = Response(text, status=200, content_type="text/plain; version=0.0.4")
    response.headers["Process-Start-Time-Unix"] = str(int(state.started or time.time()))
    return response


@bp.post("/slots/<id_slot>")
async def slot_action(id_slot: str) -> Response:
    """Save, restore or erase a slot's KV cache (files confined to --slot-save-path)."""
    state = server_state()
    if state.settings.router:  # llama-server's router routes it by the body's "model" first
        await state.registry.get((await read_json(allow_empty=True)).get("model"))
    folder = state.settings.slot_save_path
    if folder is None:
        raise NotSupported("This server does not support slots action. Start it with `--slot-save-path`")
    try:
        slot_id = int(id_slot)
    except ValueError:
        raise BadRequest("Invalid slot ID") from None
    action = request.args.get("action", "")
    if action not in ("save", "restore", "erase"):
        raise BadRequest("Invalid action")
    body = await read_json(allow_empty=True)
    served = await state.registry.get(body.get("model") or request.args.get("model"))
    if served.worker is None or served.scheduler is None:
        raise NotSupported("slots are not available: this build has no scheduler")
    scheduler = served.scheduler
    if action == "erase":
        result = await served.worker.call(lambda: scheduler.erase_slot(slot_id))
        return json_response(result)
    filename = body.get("filename")
    if not isinstance(filename, str) or not filename:
        raise BadRequest('"filename" is required')
    from pyllama.slot_store import safe_path

    path = safe_path(folder, filename)  # rejects separators and "..": 400
    if action == "save":
        result = await served.worker.call(lambda: scheduler.save_slot(slot_id, path))
    else:
        result = await served.worker.call(lambda: scheduler.restore_slot(slot_id, path))
    return json_response(result)
