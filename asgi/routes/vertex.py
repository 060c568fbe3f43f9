"""Vertex AI custom-container compatibility (llama-server's register_gcp_compat).

When the container runs under Vertex AI prediction (AIP_MODE=PREDICTION), Google calls
one predict route (AIP_PREDICT_ROUTE, default /predict) with `{"instances": [...]}`.
Each instance names the API it is for in `@requestFormat`: a camelCase alias of a route
("chatCompletions" for /v1/chat/completions, "applyTemplate" for /apply-template) or the
path itself. Every instance is run through the app as a request of its own (same API key
check, same errors), concurrently, without streaming; the answers come back in order as
`{"predictions": [...]}`, an instance's error in its place rather than failing the rest.
AIP_HEALTH_ROUTE, when set, answers like /health.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from quart import Quart, Response, request

from asgi.errors import BadRequest, error_body
from asgi.http import json_response, read_json

log = logging.getLogger(__name__)
MAX_INSTANCES = 128


def gcp_format(path: str) -> str:
    """"/v1/chat/completions" -> "chatCompletions", "/apply-template" -> "applyTemplate"."""
    s = path[3:] if path.startswith("/v1") and len(path) > 3 else path
    s = s.removeprefix("/")
    out: list[str] = []
    cap = False
    for c in s:
        if c in ":<":
            break
        if c in "/-_":
            cap = True
            continue
        out.append(c.upper() if cap else c)
        cap = False
    return "".join(out)


def _route(env: str, default: str) -> str:
    value = os.environ.get(env, "") or default
    return value if not value or value.startswith("/") else "/" + value


def register(app: Quart) -> None:
    if os.environ.get("AIP_MODE", "") != "PREDICTION":
        return
    predict_path = _route("AIP_PREDICT_ROUTE", "/predict")
    health_path = _route("AIP_HEALTH_ROUTE", "")
    aliases: dict[str, str] = {}
    paths: set[str] = set()
    for rule in app.url_map.iter_rules():
        if "POST" in (rule.methods or set()) and "<" not in rule.rule:
            paths.add(rule.rule)
            aliases.setdefault(gcp_format(rule.rule), rule.rule)
    if predict_path in paths:
        raise SystemExit(f"AIP_PREDICT_ROUTE={predict_path} conflicts with an existing route")
    log.info("Vertex AI compatibility: predict route %s, health route %s", predict_path, health_path or "/health")

    async def run_instance(instance: Any, headers: dict[str, str]) -> Any:
        if not isinstance(instance, dict):
            return {"error": error_body(400, "each instance must be a JSON object")["error"]}
        fmt = instance.get("@requestFormat")
        if not isinstance(fmt, str):
            return {"error": error_body(400, "each instance must include a string @requestFormat")["error"]}
        path = aliases.get(fmt) or (fmt if fmt in paths else None)
        if path is None:
            return {"error": error_body(400, f"no handler registered for @requestFormat: {fmt}")["error"]}
        payload = {k: v for k, v in instance.items() if k != "@requestFormat"}
        if "stream" in payload:
            log.warning("ignoring client-provided stream field in instance: the predict route does not stream")
            payload["stream"] = False
        client = app.test_client()
        answer = await client.post(path, data=json.dumps(payload), headers=headers)
        raw = await answer.get_data(as_text=True)
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return raw

    async def predict() -> Response:
        body = await read_json()
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise BadRequest("request body must include an array field named instances")
        if len(instances) > MAX_INSTANCES:
            raise BadRequest(f"instances array exceeds maximum size of {MAX_INSTANCES}")
        headers = {"Content-Type": "application/json"}
        for name in ("Authorization", "X-Api-Key"):
            if name in request.headers:
                headers[name] = request.headers[name]
        predictions = await asyncio.gather(*(run_instance(i, headers) for i in instances))
        return json_response({"predictions": list(predictions)})

    app.add_url_rule(predict_path, "vertex_predict", predict, methods=["POST"])
    if health_path and health_path != "/health":
        health = app.view_functions.get("meta.health")
        if health is not None:
            app.add_url_rule(health_path, "vertex_health", health, methods=["GET"])
