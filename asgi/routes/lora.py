"""GET/POST /lora-adapters: the loaded LoRA adapters and their server-wide scales.

GET lists {id, path, scale, task_name, prompt_prefix} per adapter (llama-server's
server_task_result_get_lora), and for an aLoRA its `alora_invocation_string` and
`alora_invocation_tokens`. POST takes [{"id", "scale"}] and sets the scales every
request without its own `lora` field runs with; adapters left out get 0, as in
llama-server. A task already running keeps the scales it started with.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from asgi.errors import BadRequest
from asgi.http import json_response, read_json_value
from asgi.lora_settings import lora_entries, lora_scales
from asgi.state import server_state

bp = Blueprint("lora", __name__)


@bp.get("/lora-adapters")
async def get_lora_adapters() -> Response:
    served = await server_state().registry.get(request.args.get("model"))
    assert served.model is not None
    lora = served.model.lora
    tok = served.tokenizer
    return json_response(lora.info(lambda t: tok.token_to_piece(t, True)) if lora is not None else [])


@bp.post("/lora-adapters")
async def post_lora_adapters() -> Response:
    body = await read_json_value()
    if not isinstance(body, list):
        raise BadRequest("Request body must be an array")
    served = await server_state().registry.get(request.args.get("model"))
    assert served.model is not None
    lora = served.model.lora
    scales = lora_scales(lora_entries(body, "Request body"), len(lora.adapters) if lora is not None else 0)
    if lora is not None:
        lora.scales = scales  # one assignment: the model thread reads either the old or the new tuple
        served.spec.lora = [(p, s) for (p, _), s in zip(served.spec.lora, scales, strict=True)]  # kept over sleep
    return json_response({"success": True})
