"""Issue 19, findings 5-9: limits before parsing, /health after a failed load in
--config-file mode, odd static paths, empty key lists and start-up mistakes.

The server-side checks run against the main test server (SmolLM2); the start-up ones run
`python -m asgi.main` and read its one line and exit status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import REPO, ServerProcess

DEEP = "[" * 100_000 + "]" * 100_000


def assert_400_names(res: httpx.Response, words: str) -> None:
    assert res.status_code == 400, (res.status_code, res.text[:300])
    error = res.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    assert words in error["message"], error
    assert "Recursion" not in res.text and "Traceback" not in res.text and str(REPO) not in res.text


def test_finding5_deep_and_huge_inputs_are_400_naming_the_limit(server: ServerProcess) -> None:
    url = server.base_url
    assert_400_names(httpx.post(url + "/completion", json={"prompt": "x", "n_predict": 1, "json_schema": DEEP},
                                timeout=60), "JSON nesting limit")
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    for path in ("/v1/chat/completions", "/apply-template"):
        assert_400_names(httpx.post(url + path, json={"messages": messages, "max_tokens": 1}, timeout=60),
                         "JSON nesting limit")
    props = {f"p{i}": {"type": "string"} for i in range(3000)}
    schema = {"type": "object", "properties": props}
    assert_400_names(httpx.post(url + "/completion", json={"prompt": "x", "n_predict": 1, "json_schema": schema},
                                timeout=60), "schema size limit")
    fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
    assert_400_names(httpx.post(url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "response_format": fmt}, timeout=60),
        "schema size limit")
    refs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(3000)}
    refs["d3000"] = {"type": "string"}
    assert_400_names(httpx.post(url + "/completion", json={
        "prompt": "x", "n_predict": 1, "json_schema": json.dumps({"$defs": refs, "$ref": "#/$defs/d0"})},
        timeout=60), "schema nesting limit")
    grammar = "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000
    assert_400_names(httpx.post(url + "/completion", json={"prompt": "x", "n_predict": 1, "grammar": grammar},
                                timeout=60), "grammar nesting limit")
    chain = "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(5000)) + 'r5000 ::= "a"\n'
    res = httpx.post(url + "/completion", json={"prompt": "x", "n_predict": 2, "grammar": chain}, timeout=120)
    assert res.status_code == 200 and res.json()["content"] == "a", res.text[:300]
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_finding6_health_reports_a_failed_load_in_config_mode(smollm2_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": [{"model": str(smollm2_path), "model_alias": "good", "n_ctx": 256},
                                             {"model": str(broken), "model_alias": "bad"}]}))
    server = ServerProcess(["--config-file", str(config)], log_name="cfg-broken")
    try:
        server.wait_ready()
        res = httpx.post(server.base_url + "/completion", json={"model": "bad", "prompt": "x"}, timeout=60)
        assert res.status_code == 503 and "failed to load" in res.json()["error"]["message"]
        assert str(tmp_path) not in res.text
        health = httpx.get(server.base_url + "/health", timeout=10)
        assert health.status_code == 500, health.text
        assert health.json()["status"] == "error" and "'bad' failed to load" in health.json()["error"]["message"]
        assert str(tmp_path) not in health.text
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/" + "a" * 300, "/" + "b" * 256 + "/x.js", "/wasm/" + "c" * 300,
                                  "/%ED%A0%80", "/" + "d/" * 3000 + "e", "/../../etc/passwd", "/x%00y"])
def test_finding7_odd_static_paths_are_404(server: ServerProcess, path: str) -> None:
    res = httpx.get(server.base_url + path, timeout=30)
    assert res.status_code == 404, (path[:40], res.status_code, res.text[:200])
    assert str(REPO) not in res.text and "Error" not in res.json()["error"]["message"]


def run_server(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "asgi.main", "--port", "0", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_exit_1(result: subprocess.CompletedProcess[str], words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr[-1000:])
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-1000:]
    assert lines[0].startswith("pyllama-server: error: ") and words in lines[0], lines[0]


def test_finding8_empty_key_lists_are_refused(smollm2_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "keys.txt"
    empty.write_text("\n  \n")
    for args, words in ((["--api-key", ""], "--api-key"), (["--api-key", " , "], "--api-key"),
                        (["--api-key-file", str(empty)], "holds no key")):
        assert_one_line_exit_1(run_server("-m", str(smollm2_path), *args), words)


def test_finding9_start_up_mistakes_are_one_line_and_exit_1(smollm2_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"models": [{"model": str(smollm2_path), "n_parallel": "abc"}]}))
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    cases = [
        (["--config-file", str(config)], "expected an integer"),
        (["-m", str(smollm2_path), "--slot-save-path", str(a_file)], "--slot-save-path"),
        (["-m", str(smollm2_path), "--cors-origins", "http://a\r\nX-Evil: 1"], "control characters"),
        (["-m", str(smollm2_path), "--grammar", "root ::= ("], "--grammar: Failed to parse grammar"),
        (["-m", str(smollm2_path), "-c", "100000000"], "more than this machine's"),
    ]
    for args, words in cases:
        started = time.monotonic()
        assert_one_line_exit_1(run_server(*args), words)
        assert time.monotonic() - started < 30
