"""GET /gguf/: the server offers its own model file to the web page's in-browser engine.

The list is JSON ({models: [{name, url, size}]}, url relative to /gguf/), the file is
served with ranges, anything else under /gguf/ is a 404 in the OpenAI error format, and a
server with API keys offers nothing (static routes skip the key check, so the model file
must not be one of them).
"""

from __future__ import annotations

import httpx

from tests.server.conftest import ServerProcess


def test_gguf_list_and_file(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/gguf/")
        assert r.status_code == 200
        models = r.json()["models"]
        assert len(models) == 1 and models[0]["name"].endswith(".gguf") and models[0]["size"] > 10_000_000
        url = str(httpx.URL(server.base_url + "/gguf/").join(models[0]["url"]))
        head = c.head(url)
        assert head.status_code == 200 and int(head.headers["content-length"]) == models[0]["size"]
        part = c.get(url, headers={"Range": "bytes=0-3"})
        assert part.status_code in (200, 206) and part.content[:4] == b"GGUF"
        for bad in ("/gguf/other.gguf", "/gguf/..%2f..%2fREADME.md", "/gguf/%00"):
            r = c.get(bad)
            assert r.status_code == 404, bad
            assert r.json()["error"]["type"] == "not_found_error"


def test_gguf_not_offered_with_api_keys(keyed_server: ServerProcess) -> None:
    with keyed_server.client() as c:
        r = c.get("/gguf/")
        assert r.status_code == 200 and r.json()["models"] == []
        assert c.get("/gguf/SmolLM2-135M-Instruct.Q4_1.gguf").status_code == 404
