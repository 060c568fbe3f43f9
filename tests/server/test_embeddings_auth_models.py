"""Embeddings (openai client + llama.cpp shape), API keys, and multi-model routing."""

from __future__ import annotations

import base64
import math

import httpx
import numpy as np
import pytest
from openai import AuthenticationError, BadRequestError, OpenAI

from tests.server.conftest import API_KEY, ServerProcess


def test_openai_embeddings(server: ServerProcess) -> None:
    client = OpenAI(api_key="x", base_url=server.base_url + "/v1")
    res = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world", "hello"],
                                   encoding_format="float")
    vectors = [np.array(d.embedding) for d in res.data]
    assert [d.index for d in res.data] == [0, 1, 2] and len(vectors[0]) == 576
    assert all(math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4) for v in vectors)  # euclidean-normalized
    assert np.allclose(vectors[0], vectors[2], atol=1e-5) and not np.allclose(vectors[0], vectors[1], atol=1e-3)
    assert res.usage.prompt_tokens == 3 and res.model == "text-embedding-3-small"
    b64 = httpx.post(server.base_url + "/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-6)


def test_native_embedding_shape(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/embedding", json={"content": "hello"}, timeout=60).json()
    assert isinstance(res, list) and res[0]["index"] == 0
    assert len(res[0]["embedding"]) == 1 and len(res[0]["embedding"][0]) == 576
    raw = httpx.post(server.base_url + "/embeddings", json={"content": "hello", "embd_normalize": -1}).json()
    assert not math.isclose(float(np.linalg.norm(raw[0]["embedding"][0])), 1.0, rel_tol=1e-3)


@pytest.mark.parametrize("body, message", [({"input": []}, "must not be empty"), ({}, '"input" or "content"'),
                                           ({"input": "x", "encoding_format": "hex"}, "float or base64")])
def test_bad_embedding_requests(server: ServerProcess, body: dict[str, object], message: str) -> None:
    res = httpx.post(server.base_url + "/v1/embeddings", json=body)
    assert res.status_code == 400 and message in res.json()["error"]["message"]


def test_embeddings_need_the_flag(keyed_server: ServerProcess) -> None:
    res = httpx.post(keyed_server.base_url + "/v1/embeddings", json={"input": "x"},
                     headers={"Authorization": f"Bearer {API_KEY}"})
    assert res.status_code == 501 and res.json()["error"]["type"] == "not_supported_error"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-test"}])
def test_missing_or_wrong_key_is_401(keyed_server: ServerProcess, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/completion"), ("POST", "/v1/chat/completions"), ("POST", "/tokenize"),
                         ("GET", "/props"), ("GET", "/slots"), ("POST", "/v1/embeddings")):
        res = httpx.request(method, keyed_server.base_url + path, json={}, headers=headers)
        assert res.status_code == 401, path
        assert res.json() == {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}


def test_public_routes_and_correct_key(keyed_server: ServerProcess) -> None:
    base = keyed_server.base_url
    assert httpx.get(base + "/health").status_code == 200
    assert httpx.get(base + "/v1/models").status_code == 200
    assert httpx.get(base + "/").status_code == 200  # the web UI loads before a key is typed
    assert httpx.options(base + "/completion", headers={"Origin": "http://x"}).status_code == 200
    ok = httpx.post(base + "/tokenize", json={"content": "hi"}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and ok.json()["tokens"]
    anthropic_style = httpx.post(base + "/tokenize", json={"content": "hi"}, headers={"X-Api-Key": API_KEY})
    assert anthropic_style.status_code == 200


def test_openai_client_with_keys(keyed_server: ServerProcess) -> None:
    with pytest.raises(AuthenticationError):
        OpenAI(api_key="wrong", base_url=keyed_server.base_url + "/v1").chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    res = OpenAI(api_key=API_KEY, base_url=keyed_server.base_url + "/v1").chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert len(res.choices) == 1


def test_multi_model_routing(multi_server: ServerProcess) -> None:
    base = multi_server.base_url
    listed = httpx.get(base + "/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["smol-chatml", "smol-llama2"]
    assert all(m["status"]["value"] == "unloaded" for m in listed)  # loaded lazily
    llama2 = httpx.post(base + "/apply-template", timeout=120,
                        json={"model": "smol-llama2", "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert llama2["prompt"] == "[INST] Hi [/INST]"
    chatml = httpx.post(base + "/apply-template", timeout=120,
                        json={"model": "smol-chatml", "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chatml["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    states = {m["id"]: m["status"]["value"] for m in httpx.get(base + "/v1/models").json()["data"]}
    assert states == {"smol-chatml": "loaded", "smol-llama2": "unloaded"}  # --models-max 1
    res = OpenAI(api_key="x", base_url=base + "/v1").chat.completions.create(
        model="smol-llama2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert res.model == "smol-llama2" and res.choices[0].message.content is not None
    props = httpx.get(base + "/props", params={"model": "smol-llama2"}).json()
    assert props["default_generation_settings"]["n_ctx"] == 512


def test_unknown_model_is_400_with_the_names(multi_server: ServerProcess) -> None:
    with pytest.raises(BadRequestError) as info:  # llama-server's router: 400 "model 'x' not found"
        OpenAI(api_key="x", base_url=multi_server.base_url + "/v1").chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    message = info.value.body["message"]  # type: ignore[index]
    assert "gpt-4" in message and "smol-chatml" in message and "smol-llama2" in message


def test_disabled_endpoints_are_501(keyed_server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/slots", "/metrics"):
        res = httpx.get(keyed_server.base_url + path, headers=auth)
        assert res.status_code == 501 and res.json()["error"]["type"] == "not_supported_error", path
    res = httpx.post(keyed_server.base_url + "/slots/0?action=erase", headers=auth)
    assert res.status_code == 501 and "--slot-save-path" in res.json()["error"]["message"]


def test_path_flag_serves_another_folder(multi_server: ServerProcess) -> None:
    res = httpx.get(multi_server.base_url + "/")
    assert res.status_code == 200 and "custom front end" in res.text
    assert httpx.get(multi_server.base_url + "/app.js").status_code == 404  # the bundled UI is not mixed in
    js = httpx.get(multi_server.base_url + "/completion.js")  # ...except /completion.js, as the seeds promise
    assert js.status_code == 200 and "llama" in js.text


def test_post_props_with_the_flag(keyed_server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    res = httpx.post(keyed_server.base_url + "/props", json={"system_prompt": "You are terse."}, headers=auth)
    assert res.json() == {"success": True}
    props = httpx.get(keyed_server.base_url + "/props", headers=auth).json()
    assert props["system_prompt"] == "You are terse." and props["endpoint_props"] is True
    assert props["endpoint_slots"] is False
    httpx.post(keyed_server.base_url + "/props", json={"system_prompt": ""}, headers=auth)  # leave it as found
