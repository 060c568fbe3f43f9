"""Routes llama-server serves for capabilities pyllama does not have, answered as
llama-server answers them when the capability is absent (server.cpp's route table).

- `POST /v1/audio/transcriptions`, `/audio/transcriptions`: llama-server checks the model
  for an audio projector before reading the body, and answers 501 "The current model does
  not support audio input." without one. pyllama loads no multimodal projectors, so every
  request gets that answer, whatever its body.
- `GET`/`POST /tools`: llama-server's built-in agent tools and MCP servers (`--tools`,
  `--mcp-*`); with none configured the route answers 403 `feature_disabled`, the same
  body as /cors-proxy without --ui-mcp-proxy. pyllama runs no tools (`--tools` is accepted
  with a warning), so the route always answers that.
"""

from __future__ import annotations

from quart import Blueprint, Response

from asgi.errors import NotSupported
from asgi.http import json_response

bp = Blueprint("unavailable", __name__)


@bp.post("/v1/audio/transcriptions")
@bp.post("/audio/transcriptions")
async def transcriptions() -> Response:
    raise NotSupported("The current model does not support audio input.")


@bp.route("/tools", methods=["GET", "POST"])
async def tools() -> Response:
    return json_response({"error": {"code": 403, "message": "this feature is disabled", "type": "feature_disabled"}},
                         status=403)
