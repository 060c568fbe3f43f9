"""`--api-prefix`: a real server whose routes all live under /llm, as llama-server's do.

The prefix is given as `llm/` (no leading slash, a trailing one), which llama-server would
take literally and so serve nothing; pyllama normalises it to `/llm`. Every check goes over
a real socket: httpx for the routes, the `openai` package with `base_url=.../llm/v1`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asgi.api_prefix import normalise
from asgi.settings import parse_settings
from tests.server.conftest import ServerProcess


@pytest.fixture(scope="module")
def prefixed(smollm2_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["-m", str(smollm2_path), "-c", "512", "-np", "1", "--api-prefix", "llm/"], log_name="prefix")
    try:
        server.wait_ready(path="/llm/health")
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("given", "served"), [
    ("/llm", "/llm"), ("llm", "/llm"), ("/llm/", "/llm"), (" /a/b/ ", "/a/b"), ("/", ""), ("", ""),
])
def test_prefix_is_normalised(given: str, served: str) -> None:
    assert normalise(given) == served


def test_prefix_from_flag_and_environment(smollm2_path: Path) -> None:
    assert parse_settings(["-m", str(smollm2_path), "--api-prefix", "/v2/"], {}).api_prefix == "/v2"
    assert parse_settings(["-m", str(smollm2_path)], {"LLAMA_ARG_API_PREFIX": "proxy"}).api_prefix == "/proxy"
    assert parse_settings(["-m", str(smollm2_path)], {}).api_prefix == ""


def test_routes_answer_under_the_prefix(prefixed: ServerProcess) -> None:
    with prefixed.client() as c:
        assert c.get("/llm/health").json()["status"] == "ok"
        models = c.get("/llm/v1/models").json()
        assert models["data"][0]["id"]
        assert c.get("/llm/props").json()["total_slots"] == 1
        r = c.post("/llm/completion", json={"prompt": "The capital of France is", "n_predict": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 4
        doc = c.get("/llm/openapi.json").json()
        assert doc["servers"] == [{"url": "/llm"}] and "/v1/chat/completions" in doc["paths"]
        tok = c.post("/llm/tokenize", json={"content": "hello"}).json()["tokens"]
        assert c.post("/llm/detokenize", json={"tokens": tok}).json()["content"].strip() == "hello"


def test_openai_client_with_prefixed_base_url(prefixed: ServerProcess) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=prefixed.base_url + "/llm/v1", api_key="none")
    reply = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Say hi"}],
                                           max_tokens=5, temperature=0)
    assert reply.choices[0].message.content
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Say hi"}],
                                                 max_tokens=5, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content


def test_paths_outside_the_prefix_are_404(prefixed: ServerProcess) -> None:
    with prefixed.client() as c:
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/completion"), ("GET", "/"),
                             ("GET", "/llmx/health"), ("POST", "/llm"), ("GET", "/llm/no-such-route")):
            r = c.request(method, path, json={"prompt": "x"} if method == "POST" else None)
            assert r.status_code == 404, (method, path)
            assert r.json() == {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
            assert r.headers["content-type"].startswith("application/json")


def test_web_ui_lives_under_the_prefix(prefixed: ServerProcess) -> None:
    with prefixed.client() as c:
        r = c.get("/llm?engine=server")
        assert r.status_code == 308 and r.headers["location"] == "/llm/?engine=server"
        page = c.get("/llm/")
        assert page.status_code == 200 and "<script type=\"module\" src=\"app.js\">" in page.text
        assert c.get("/llm/app.js").status_code == 200
        assert c.get("/llm/gguf/").status_code == 200  # the page's relative list of model files
    followed = httpx.get(prefixed.base_url + "/llm", follow_redirects=True, timeout=30)
    assert followed.status_code == 200 and str(followed.url).endswith("/llm/")
