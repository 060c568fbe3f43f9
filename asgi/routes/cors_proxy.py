"""/cors-proxy: llama-server's experimental proxy for the web UI's MCP client (--ui-mcp-proxy).

A browser page cannot call an MCP server on another origin that sends no CORS headers,
so llama-server relays `GET|POST /cors-proxy?url=TARGET` itself. Only headers the page
names explicitly (`X-Llama-Server-Proxy-Header-<name>`) are sent on; the caller's own
Authorization, cookies and API key never leave this server. Without --ui-mcp-proxy the
route answers 403, as llama-server's does. The relay runs on a thread (urllib, stdlib):
no new dependency for a feature that is off by default.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from quart import Blueprint, Response, request

from asgi.errors import BadRequest
from asgi.http import json_response
from asgi.state import server_state

bp = Blueprint("cors_proxy", __name__)

PROXY_HEADER_PREFIX = "x-llama-server-proxy-header-"
TIMEOUT_SECONDS = 600.0  # llama-server's read/write timeouts for the proxied request
PASSED_BACK = ("content-type", "cache-control", "mcp-session-id", "content-encoding")


def _target() -> str:
    url = request.args.get("url", "")
    try:
        parts = urlsplit(url)
        port = parts.port  # a malformed port raises here
    except ValueError:
        raise BadRequest("invalid target URL") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"unsupported URL scheme in target URL: {parts.scheme}")
    if not parts.hostname:
        raise BadRequest("invalid target URL: missing host")
    if parts.password:
        raise BadRequest("authentication in target URL is not supported")
    return url if parts.path else urlunsplit((parts.scheme, parts.netloc, "/", parts.query, parts.fragment))


def _relay(method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as res:  # the scheme is checked in _target
            return res.status, dict(res.headers.items()), res.read()
    except urllib.error.HTTPError as exc:  # the target's own error status is passed through
        return exc.code, dict(exc.headers.items()), exc.read()


@bp.route("/cors-proxy", methods=["GET", "POST"])
async def cors_proxy() -> Response:
    if not server_state().settings.ui_mcp_proxy:
        return json_response({"error": {"code": 403, "message": "this feature is disabled", "type": "feature_disabled"}},
                             status=403)
    url = _target()
    headers = {key[len(PROXY_HEADER_PREFIX):]: value for key, value in request.headers.items()
               if key.lower().startswith(PROXY_HEADER_PREFIX) and len(key) > len(PROXY_HEADER_PREFIX)}
    body = await request.get_data(as_text=False) if request.method == "POST" else None
    assert body is None or isinstance(body, bytes)
    try:
        status, answer_headers, data = await asyncio.to_thread(_relay, request.method, url, headers, body)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return json_response({"error": {"code": 502, "message": f"proxy: cannot reach the target: {reason}",
                                        "type": "server_error"}}, status=502)
    response = Response(data, status=status)
    for key, value in answer_headers.items():
        if key.lower() in PASSED_BACK:
            response.headers[key] = value
    return response
