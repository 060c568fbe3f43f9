"""Ways of serving: TLS through Hypercorn, `hypercorn asgi.app:app`, load failures, loading state."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from asgi.app import create_app
from asgi.settings import parse_settings
from tests.server.conftest import ServerProcess


def test_tls_with_ssl_flags(smollm2_path: Path, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    server = ServerProcess(["-m", str(smollm2_path), "-c", "256", "--ssl-key-file", str(key),
                            "--ssl-cert-file", str(cert)], log_name="tls", scheme="https")
    try:
        server.wait_ready()
        res = httpx.get(server.base_url + "/health", verify=ssl.create_default_context(cafile=str(cert)))
        assert res.status_code == 200 and res.json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.base_url.replace("https", "http") + "/health", timeout=5)
    finally:
        server.stop()


def test_hypercorn_cli_reads_settings_from_environment(smollm2_path: Path) -> None:
    command = [sys.executable, "-m", "hypercorn", "asgi.app:app", "--bind", "127.0.0.1:{port}"]
    env = {"LLAMA_ARG_MODEL": str(smollm2_path), "LLAMA_ARG_CTX_SIZE": "256", "PYLLAMA_SERVER_ARGS": "-a via-env"}
    server = ServerProcess([], env, "hypercorn-cli", command=command)
    try:
        server.wait_ready()
        models = httpx.get(server.base_url + "/v1/models").json()
        assert models["data"][0]["id"] == "via-env"
        props = httpx.get(server.base_url + "/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 256
        assert httpx.post(server.base_url + "/tokenize", json={"content": "Hello"}).json() == {"tokens": [19556]}
    finally:
        server.stop()


def test_broken_model_file_reports_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    server = ServerProcess(["-m", str(bad), "--log-format", "json"], log_name="broken")
    try:
        deadline = 60.0
        import time

        start = time.monotonic()
        status = 0
        while time.monotonic() - start < deadline:
            try:
                res = httpx.get(server.base_url + "/health", timeout=2)
                status = res.status_code
                if status == 500:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert status == 500
        assert res.json()["status"] == "error" and "broken.gguf" in res.json()["error"]["message"]
        gen = httpx.post(server.base_url + "/completion", json={"prompt": "x"})
        assert gen.status_code == 503 and gen.json()["error"]["type"] == "unavailable_error"
        import json

        records = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
        failure = [r for r in records if "failed to load" in r["msg"]]
        assert failure and failure[0]["level"] == "ERROR"  # --log-format json: one JSON object per line
    finally:
        server.stop()


def test_loading_state_is_503(smollm2_path: Path) -> None:
    """Before the model is ready every model route answers 503; /health says 'loading model'."""
    app = create_app(parse_settings(["-m", str(smollm2_path)], {}))

    async def run() -> None:
        client = app.test_client()  # serving has not started: the model is not loaded yet
        health = await client.get("/health")
        assert health.status_code == 503
        assert (await health.get_json())["status"] == "loading model"
        res = await client.post("/completion", json={"prompt": "x"})
        assert res.status_code == 503 and (await res.get_json())["error"]["message"] == "Loading model"
        models = await client.get("/v1/models")
        assert models.status_code == 200 and (await models.get_json())["data"][0]["status"]["value"] == "unloaded"

    asyncio.run(run())


def test_hypercorn_cli_with_bad_settings_stops_with_the_reason() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("LLAMA_")}
    env["LLAMA_ARG_MODEL"] = "/no/such/model.gguf"
    result = subprocess.run([sys.executable, "-m", "hypercorn", "asgi.app:app", "--bind", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert "pyllama-server: error: model file not found: /no/such/model.gguf" in result.stderr + result.stdout
