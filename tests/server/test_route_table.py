"""Our route table against llama-server's (tools/server/server.cpp, the `ctx_http.get/post/del`
calls, copied below), and the answers for capabilities pyllama does not have: the same
status as llama-server gives on a model without them."""

from __future__ import annotations

import io
import json
import subprocess

import httpx
import openai
import pytest

from tests.server.conftest import ServerProcess

# (method, path) of every route llama-server registers (router mode's /models ones included;
# `:id_slot` written as OpenAPI's `{id_slot}`)
LLAMA_SERVER_ROUTES = [
    ("post", "/models"), ("post", "/models/load"), ("post", "/models/unload"), ("get", "/models/sse"),
    ("delete", "/models"), ("get", "/health"), ("get", "/v1/health"), ("get", "/metrics"), ("get", "/props"),
    ("post", "/props"), ("get", "/models"), ("get", "/v1/models"), ("post", "/completion"),
    ("post", "/completions"), ("post", "/v1/completions"), ("post", "/chat/completions"),
    ("post", "/v1/chat/completions"), ("post", "/v1/chat/completions/control"), ("post", "/v1/responses"),
    ("post", "/responses"), ("post", "/v1/audio/transcriptions"), ("post", "/audio/transcriptions"),
    ("post", "/v1/messages"), ("post", "/infill"), ("post", "/embedding"), ("post", "/embeddings"),
    ("post", "/v1/embeddings"), ("post", "/rerank"), ("post", "/reranking"), ("post", "/v1/rerank"),
    ("post", "/v1/reranking"), ("post", "/tokenize"), ("post", "/detokenize"), ("post", "/apply-template"),
    ("post", "/chat/completions/input_tokens"), ("post", "/v1/chat/completions/input_tokens"),
    ("post", "/responses/input_tokens"), ("post", "/v1/responses/input_tokens"),
    ("post", "/v1/messages/count_tokens"), ("get", "/lora-adapters"), ("post", "/lora-adapters"),
    ("get", "/slots"), ("post", "/slots/{id_slot}"), ("get", "/v1/stream"), ("post", "/v1/streams/lookup"),
    ("delete", "/v1/stream"), ("get", "/cors-proxy"), ("post", "/cors-proxy"), ("get", "/tools"),
    ("post", "/tools"),
]


def test_every_llama_server_route_is_served(server: ServerProcess) -> None:
    paths = httpx.get(server.base_url + "/openapi.json", timeout=60).json()["paths"]
    missing = [(m, p) for m, p in LLAMA_SERVER_ROUTES if m not in paths.get(p, {})]
    assert not missing


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/audio/transcriptions"])
def test_transcriptions_are_501_on_a_model_without_audio(server: ServerProcess, path: str) -> None:
    for kwargs in ({"files": {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}, "data": {"model": "x"}},
                   {"json": {"file": "x"}}, {"content": b"garbage"}):
        res = httpx.post(server.base_url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
        assert res.status_code == 501
        assert res.json()["error"] == {"code": 501, "message": "The current model does not support audio input.",
                                       "type": "not_supported_error"}


def test_transcriptions_with_the_openai_client(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper", file=("a.wav", io.BytesIO(b"RIFF....WAVE")))
    assert info.value.status_code == 501


def test_tools_are_403_feature_disabled(server: ServerProcess) -> None:
    for method in ("GET", "POST"):
        res = httpx.request(method, server.base_url + "/tools", json={}, timeout=60)
        assert res.status_code == 403
        assert res.json()["error"]["type"] == "feature_disabled"
    out = subprocess.run(["curl", "-s", server.base_url + "/tools"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out)["error"]["message"] == "this feature is disabled"
