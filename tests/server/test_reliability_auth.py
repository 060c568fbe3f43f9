"""API keys on every route: the test walks the app's own url_map, so a route added later
cannot slip through without a key. Only /health, /v1/models (and their aliases) and GETs of
static files are public; everything else answers 401 in the OpenAI error shape."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from asgi.app import PUBLIC_PATHS, _key_is_valid, create_app
from asgi.settings import parse_settings
from tests.server.conftest import API_KEY, ServerProcess


def all_routes(smollm2_path: Path, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(method, concrete path, endpoint) for every rule of a server with every option on."""
    settings = parse_settings(["-m", str(smollm2_path), "--slot-save-path", str(tmp_path), "--metrics", "--props",
                               "--embeddings", "--api-key", "k"], {})
    app = create_app(settings)
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "0", rule.rule)
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            routes.append((method, path, rule.endpoint))
    return routes


def test_every_route_needs_a_key(keyed_server: ServerProcess, smollm2_path: Path, tmp_path: Path) -> None:
    routes = all_routes(smollm2_path, tmp_path)
    assert len(routes) >= 36  # GET+HEAD per GET rule, POST per POST rule
    endpoints = {e for _, _, e in routes}
    assert {"completions.completion", "chat.chat_completions", "meta.slot_action", "openapi_json"} <= endpoints
    public, protected = [], []
    for method, path, endpoint in routes:
        is_public = (path in PUBLIC_PATHS or endpoint.startswith("static.")) and method in ("GET", "HEAD")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": API_KEY[:-1]}):
            res = httpx.request(method, keyed_server.base_url + path, headers=headers, json={} if method == "POST" else None)
            if is_public:
                assert res.status_code != 401, (method, path)
            else:
                assert res.status_code == 401, (method, path, res.status_code)
                if method != "HEAD":
                    assert res.json() == {"error": {"code": 401, "message": "Invalid API Key",
                                                    "type": "authentication_error"}}
        (public if is_public else protected).append((method, path))
    assert ("GET", "/health") in public and ("GET", "/v1/models") in public and ("GET", "/openapi.json") in protected
    # and with the key, no protected route answers 401
    for method, path in protected:
        res = httpx.request(method, keyed_server.base_url + path, headers={"Authorization": f"Bearer {API_KEY}"},
                            json={} if method == "POST" else None, timeout=60)
        assert res.status_code != 401, (method, path)


def test_the_running_server_has_the_same_routes(keyed_server: ServerProcess, smollm2_path: Path, tmp_path: Path) -> None:
    doc = httpx.get(keyed_server.base_url + "/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    served = {re.sub(r"{[^}]+}", "0", p) for p in doc["paths"]}
    assert served == {path for _, path, _ in all_routes(smollm2_path, tmp_path)}


@pytest.mark.parametrize("given, ok", [("k1", True), ("k2", True), ("k", False), ("k1 ", False), ("", False),
                                       ("k1k1", False), ("\u00e9", False)])
def test_key_comparison(given: str, ok: bool) -> None:
    assert _key_is_valid(given, ["k1", "k2"]) is ok
