"""`--api-prefix PREFIX`: every route served under PREFIX, as llama-server serves them.

llama-server registers each route at `api_prefix + path` (server-http.cpp), so behind a
reverse proxy that forwards `/llm/...` unchanged, `--api-prefix /llm` answers
`/llm/v1/chat/completions`, `/llm/health` and the web UI at `/llm/`. Here one ASGI layer,
outermost, records the prefix as the ASGI `root_path` of the requests under it, which Quart
strips before routing, so no route, blueprint or test needs to know about it.

Where llama-server is weak we do better: the value is normalised (a missing leading `/`
or a trailing `/` would make its routes unreachable: `api` -> `/api`, `/api/` -> `/api`),
and `GET /api` redirects to `/api/`, where the web UI lives and from which its relative
requests resolve under the prefix. A path outside the prefix is a 404 in the OpenAI error
shape, as llama-server answers any path it has no route for.
"""

from __future__ import annotations

import json
from typing import Any

from asgi.errors import error_body


def normalise(prefix: str) -> str:
    """'' for none; otherwise one leading slash and no trailing one ('/' alone is none)."""
    stripped = prefix.strip().strip("/")
    return f"/{stripped}" if stripped else ""


class ApiPrefix:
    """ASGI middleware: serve `app` under `prefix` (normalised, non-empty)."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(self.prefix + "/"):
            # ASGI: `path` keeps the mount point and `root_path` names it; Quart routes on
            # what follows it (and builds URLs with it).
            await self.app({**scope, "root_path": scope.get("root_path", "") + self.prefix}, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == self.prefix and scope.get("method") in ("GET", "HEAD"):
            query = scope.get("query_string", b"")
            location = (self.prefix + "/").encode("utf-8") + (b"?" + query if query else b"")
            await _answer(send, 308, b"", [(b"Location", location)])
            return
        body = json.dumps(error_body(404, "File Not Found")).encode("utf-8")
        await _answer(send, 404, body, [(b"Content-Type", b"application/json; charset=utf-8")])


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"Content-Length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
