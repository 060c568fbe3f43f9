"""Server state, tokenizer routes, CORS, static files and error shapes on a real server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess


def test_health(server: ServerProcess) -> None:
    res = httpx.get(server.base_url + "/health")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "slots_idle": 2, "slots_processing": 0}
    assert res.headers["content-type"].startswith("application/json")
    with_slots = httpx.get(server.base_url + "/health?include_slots").json()
    assert [s["id"] for s in with_slots["slots"]] == [0, 1]


def test_props(server: ServerProcess) -> None:
    body = httpx.get(server.base_url + "/props").json()
    assert body["total_slots"] == 2
    assert body["model_path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert body["model_alias"] == "smollm2"
    settings = body["default_generation_settings"]
    assert settings["n_ctx"] == 2048  # -c 4096 shared by 2 slots
    assert settings["params"]["temperature"] == 0.8 and settings["params"]["top_k"] == 40
    assert settings["params"]["seed"] == 4294967295
    assert "<|im_start|>" in body["chat_template"]
    assert body["bos_token"] == "<|im_start|>" and body["eos_token"] == "<|im_end|>"
    assert body["chat_template_caps"]["supports_system_role"] is True
    assert body["endpoint_metrics"] is True and body["endpoint_slots"] is True


def test_post_props_disabled_by_default(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/props", json={})
    assert res.status_code == 501
    assert res.json()["error"]["type"] == "not_supported_error"


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
def test_models(server: ServerProcess, path: str) -> None:
    body = httpx.get(server.base_url + path).json()
    assert body["object"] == "list" and len(body["data"]) == 1
    model = body["data"][0]
    assert model["id"] == "smollm2" and model["object"] == "model" and model["owned_by"] == "llamacpp"
    assert model["meta"]["n_vocab"] == 49152 and model["meta"]["n_ctx_train"] == 8192
    assert body["models"][0]["name"] == "smollm2"


def test_tokenize_detokenize_roundtrip(server: ServerProcess) -> None:
    with server.client() as c:
        tokens = c.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
        assert tokens == [19556, 905]
        assert c.post("/detokenize", json={"tokens": tokens}).json() == {"content": "Hello world"}
        pieces = c.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
        assert pieces == [{"id": 19556, "piece": "Hello"}, {"id": 905, "piece": " world"}]


def test_tokenize_special_tokens(server: ServerProcess) -> None:
    with server.client() as c:
        parsed = c.post("/tokenize", json={"content": "<|im_start|>hi"}).json()["tokens"]
        assert parsed[0] == 1  # parse_special defaults to true: one control token
        literal = c.post("/tokenize", json={"content": "<|im_start|>hi", "parse_special": False}).json()["tokens"]
        assert 1 not in literal and len(literal) > 2
        mixed = c.post("/tokenize", json={"content": ["Hello", 905]}).json()["tokens"]
        assert mixed == [19556, 905]


def test_tokenize_piece_that_is_not_utf8(server: ServerProcess) -> None:
    with server.client() as c:
        tokens = c.post("/tokenize", json={"content": "😀", "with_pieces": True}).json()["tokens"]
        pieces = [t["piece"] for t in tokens]
        assert any(isinstance(p, list) for p in pieces)  # byte tokens come back as byte values
        raw = b"".join(bytes(p) if isinstance(p, list) else p.encode() for p in pieces)
        assert raw.decode() == "😀"


def test_detokenize_rejects_bad_ids(server: ServerProcess) -> None:
    with server.client() as c:
        res = c.post("/detokenize", json={"tokens": [1, 10**9]})
        assert res.status_code == 400 and "out of range" in res.json()["error"]["message"]
        res = c.post("/detokenize", json={"tokens": "abc"})
        assert res.status_code == 400


def test_apply_template(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/apply-template", json={
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})
    assert res.status_code == 200
    assert res.json() == {"prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                    "<|im_start|>assistant\n"}


def test_cors(server: ServerProcess) -> None:
    res = httpx.options(server.base_url + "/completions", headers={
        "Origin": "http://web.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization"})
    assert res.status_code == 200
    assert res.headers["Access-Control-Allow-Origin"] == "http://web.example"
    assert res.headers["Access-Control-Allow-Credentials"] == "true"
    assert res.headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE, OPTIONS"
    assert res.headers["Access-Control-Allow-Headers"] == "*"
    res = httpx.get(server.base_url + "/health", headers={"Origin": "http://a.example"})
    assert res.headers["Access-Control-Allow-Origin"] == "http://a.example"


def test_static_web_ui(server: ServerProcess) -> None:
    res = httpx.get(server.base_url + "/")
    assert res.status_code == 200 and "<html" in res.text.lower()
    js = httpx.get(server.base_url + "/completion.js")
    assert js.status_code == 200 and "export" in js.text and "llama" in js.text
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.base_url + "/../pyproject.toml").status_code == 404
    assert httpx.get(server.base_url + "/%2e%2e/pyproject.toml").status_code == 404


def _error(res: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert res.status_code == status, res.text
    error: dict[str, Any] = res.json()["error"]
    assert error["code"] == status and error["type"] == kind and error["message"]
    return error


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "body is empty"),
        (b'{"prompt": "x", "n_predict": "ten"}', "type must be number"),
        (b'{"prompt": "x", "n_predict": -2}', "-1 <= value"),
        (b'{"prompt": "x", "temperature": "hot"}', "Field 'temperature'"),
        (b'{"prompt": "x", "stream": "yes"}', "type must be boolean"),
        (b'{"prompt": "x", "samplers": ["top_k", "warp_drive"]}', "unknown sampler 'warp_drive'"),
        (b'{"prompt": "x", "grammar": "root ::= [a-"}', "Failed to parse grammar"),
        (b'{"prompt": "x", "stop": 5}', "Field 'stop'"),
        (b'{"prompt": {"what": 1}}', "prompt"),
        (b'{"prompt": [1, 99999999]}', "out of range"),
        (b'{"n_predict": 4}', '"prompt" is required'),
        (b'{"prompt": "x", "id_slot": -3}', "Field 'id_slot'"),
        (b'{"prompt": "x", "logit_bias": 3}', "Field 'logit_bias'"),
        (b'{"prompt": "x", "image_data": [{"data": "AAAA", "id": 12}]}', "image_data is not supported"),
    ],
)
def test_bad_completion_requests_are_400(server: ServerProcess, payload: bytes, message: str) -> None:
    res = httpx.post(server.base_url + "/completion", content=payload, headers={"Content-Type": "application/json"})
    assert message in _error(res, 400, "invalid_request_error")["message"]


def test_oversized_prompt_is_400(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/completion", json={"prompt": "hello " * 2100, "n_predict": 1}, timeout=120)
    error = _error(res, 400, "exceed_context_size_error")
    assert "context size" in error["message"]
    assert error["n_ctx"] == 2048 and error["n_prompt_tokens"] > 2048
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "hello " * 2100}], "stream": True}) as streamed:
        assert streamed.status_code == 400  # before the stream starts: a plain HTTP error
        streamed.read()
        assert streamed.json()["error"]["type"] == "exceed_context_size_error"


def test_unknown_route_and_method(server: ServerProcess) -> None:
    _error(httpx.get(server.base_url + "/v1/nothing-here"), 404, "not_found_error")
    # GET on a POST route falls through to the static files, as in llama-server: a JSON 404.
    _error(httpx.get(server.base_url + "/completion"), 404, "not_found_error")
    assert httpx.put(server.base_url + "/completion", json={}).status_code == 405


def test_metrics_prometheus_text(server: ServerProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(server.base_url + "/completion", json={"prompt": "One", "n_predict": 2}, timeout=120)
    res = httpx.get(server.base_url + "/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(res.text)}
    for name in ("llamacpp:prompt_tokens", "llamacpp:tokens_predicted", "llamacpp:prompt_tokens_seconds",
                 "llamacpp:predicted_tokens_seconds", "llamacpp:kv_cache_usage_ratio", "llamacpp:kv_cache_tokens",
                 "llamacpp:requests_processing", "llamacpp:requests_deferred", "llamacpp:n_decode"):
        assert name in families, name
    predicted = families["llamacpp:tokens_predicted"].samples[0].value
    assert predicted >= 2


def test_slots(server: ServerProcess) -> None:
    body = httpx.get(server.base_url + "/slots").json()
    assert [s["id"] for s in body] == [0, 1]
    assert all(s["n_ctx"] == 2048 and s["is_processing"] is False for s in body)


def test_slot_save_erase_restore(server: ServerProcess) -> None:
    with server.client() as c:
        done = c.post("/completion", json={"prompt": "Slots keep their cache", "n_predict": 1, "id_slot": 0})
        assert done.status_code == 200
        saved = c.post("/slots/0?action=save", json={"filename": "s0.bin"}).json()
        assert saved["id_slot"] == 0 and saved["filename"] == "s0.bin" and saved["n_saved"] >= 5
        assert saved["n_written"] > 0 and "save_ms" in saved["timings"]
        erased = c.post("/slots/0?action=erase").json()
        assert erased["id_slot"] == 0 and erased["n_erased"] >= saved["n_saved"]
        restored = c.post("/slots/0?action=restore", json={"filename": "s0.bin"}).json()
        assert restored["n_restored"] == saved["n_saved"] and restored["n_read"] > 0
        for body, query in (({"filename": "../x"}, "save"), ({"filename": "a/b"}, "save"), ({}, "save"),
                            ({"filename": "x"}, "explode"), ({"filename": "missing.bin"}, "restore")):
            res = c.post(f"/slots/0?action={query}", json=body)
            assert res.status_code == 400, (body, query, res.text)
        assert c.post("/slots/zero?action=erase").status_code == 400
