"""What llama.cpp's own server test suite (tools/server/tests) expects of llama-server, on
real pyllama servers: the flags it passes, header case, request fields (`n_predict` over
-n, `tool_choice: null`, `verbose`, `continue_final_message`, `return_progress`, embedding
content parts), /v1/models ids, /slots and /metrics shapes, /cors-proxy and sleep mode.

The expectations are llama-server's behaviour as read in its source (tools/server) and
its tests; nothing here needs llama.cpp at run time.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.server.conftest import ServerProcess, sse_events, start

CHAT = {"messages": [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]}


@pytest.fixture(scope="module")
def compat(smollm2_path: Path) -> Iterator[ServerProcess]:
    """Started with flags llama.cpp's suite passes that pyllama ignores or did not know."""
    yield from start(
        ["-m", str(smollm2_path), "-c", "1024", "-np", "1", "-n", "4", "-b", "16", "--metrics", "--slots",
         "--embeddings", "--ui-mcp-proxy", "--backend_sampling", "--offline", "--swa-full", "--cache-ram", "0",
         "--no-cache-idle-slots", "--reasoning", "off", "--media-path", "/tmp", "--grp-attn-n", "4", "--no-jinja",
         "-a", "tinyllama-2,fim,code"],
        "compat",
    )


@pytest.fixture(scope="module")
def sleepy(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "512", "--metrics", "--sleep-idle-seconds", "1"], "sleepy")


def post(server: ServerProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=300)


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=60).text
    lines = [ln for ln in text.splitlines() if ln.startswith(f"llamacpp:{name} ")]
    assert len(lines) == 1, text
    return float(lines[0].split(" ", 1)[1])


def test_suite_flags_start_the_server_and_unknown_ones_warn(compat: ServerProcess) -> None:
    assert httpx.get(compat.base_url + "/health").status_code == 200
    log = compat.log_path.read_text()
    assert "ignoring unknown arguments: --grp-attn-n 4" in log
    assert "--backend-sampling has no effect" in log


def test_header_names_are_title_case_as_llama_server(compat: ServerProcess) -> None:
    head = subprocess.run(["curl", "-si", compat.base_url + "/health", "-H", "Origin: http://x.example"],
                          capture_output=True, text=True, timeout=60).stdout
    names = [line.split(":", 1)[0] for line in head.splitlines()[1:] if ":" in line]
    assert "Content-Type" in names and "Access-Control-Allow-Origin" in names
    assert "content-type" not in names


def test_model_id_is_the_first_alias_in_sorted_order(compat: ServerProcess) -> None:
    model = httpx.get(compat.base_url + "/v1/models").json()["data"][0]
    assert model["id"] == "code" and model["aliases"] == ["code", "fim", "tinyllama-2"]


def test_request_n_predict_wins_over_the_server_default(compat: ServerProcess) -> None:
    body = post(compat, "/completion", {"prompt": "Once upon a time", "n_predict": 9, "ignore_eos": True}).json()
    assert body["tokens_predicted"] == 9 and body["generation_settings"]["n_predict"] == 9
    assert post(compat, "/completion", {"prompt": "Once upon a time"}).json()["generation_settings"]["n_predict"] == 4


def test_ignore_eos_lists_the_end_of_generation_biases(compat: ServerProcess) -> None:
    on = post(compat, "/completion", {"prompt": "Hi", "n_predict": 2, "ignore_eos": True}).json()
    biases = on["generation_settings"]["logit_bias"]
    assert biases and all(b["bias"] is None for b in biases)  # -inf is null in JSON
    off = post(compat, "/completion", {"prompt": "Hi", "n_predict": 2, "ignore_eos": False}).json()
    assert off["generation_settings"]["logit_bias"] == []


def test_tool_choice_null_and_verbose(compat: ServerProcess) -> None:
    res = post(compat, "/v1/chat/completions", {**CHAT, "max_tokens": 2, "tool_choice": None, "verbose": True})
    assert res.status_code == 200, res.text
    assert "Book" in res.json()["__verbose"]["prompt"]
    assert "__verbose" not in post(compat, "/v1/chat/completions", {**CHAT, "max_tokens": 2}).json()



def test_verbose_on_streamed_chunks(compat: ServerProcess) -> None:
    """As llama-server: the native result rides on the first chunk of the final result
    (chat) and on the final chunk (text completions); nowhere without `verbose`."""
    chat = sse_events(post(compat, "/v1/chat/completions", {**CHAT, "max_tokens": 3, "stream": True, "verbose": True}))
    marked = [e for e in chat if isinstance(e, dict) and "__verbose" in e]
    assert len(marked) == 1 and "Book" in marked[0]["__verbose"]["prompt"]
    text = sse_events(post(compat, "/v1/completions", {"prompt": "Hi", "max_tokens": 3, "stream": True, "verbose": True}))
    finals = [e for e in text if isinstance(e, dict) and "__verbose" in e]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] is not None
    plain = sse_events(post(compat, "/v1/chat/completions", {**CHAT, "max_tokens": 3, "stream": True}))
    assert not any(isinstance(e, dict) and "__verbose" in e for e in plain)

def test_continue_final_message(compat: ServerProcess) -> None:
    messages = [*CHAT["messages"], {"role": "assistant", "content": "Whill"}]
    res = post(compat, "/chat/completions", {"messages": messages, "max_tokens": 2, "verbose": True,
                                             "add_generation_prompt": False, "continue_final_message": True})
    assert res.status_code == 200 and res.json()["__verbose"]["prompt"].endswith("assistant\nWhill")
    both = post(compat, "/chat/completions", {"messages": messages, "continue_final_message": True})
    assert both.status_code == 400 and "add_generation_prompt" in both.json()["error"]["message"]


def test_return_progress_reports_each_prompt_batch(compat: ServerProcess) -> None:
    prompt = "the quick brown fox jumps over the lazy dog " * 6  # several batches of -b 16
    with httpx.stream("POST", compat.base_url + "/completion", timeout=300, json={
            "prompt": prompt, "n_predict": 2, "stream": True, "return_progress": True, "cache_prompt": False}) as res:
        res.read()
        events = sse_events(res)
    progress = [e["prompt_progress"] for e in events if isinstance(e, dict) and "prompt_progress" in e]
    assert len(progress) > 2
    assert progress[0]["processed"] == progress[0]["cache"] and progress[-1]["processed"] == progress[-1]["total"]
    assert all(b["processed"] > a["processed"] for a, b in itertools.pairwise(progress))
    first = next(e for e in events if isinstance(e, dict) and "prompt_progress" in e)
    assert first["timings"]["prompt_n"] == 0 and first["timings"]["prompt_ms"] == 0.0


def test_embedding_content_parts(compat: ServerProcess) -> None:
    res = post(compat, "/v1/embeddings", {"input": [
        "hello world", {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}]})
    assert res.status_code == 200
    data = res.json()["data"]
    assert data[0]["embedding"] == data[1]["embedding"]
    for bad in ({"content": "string"}, {"content": [{"type": "unknown"}]},
                {"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}):
        assert post(compat, "/v1/embeddings", {"input": bad}).status_code == 400


def test_slots_next_token_is_a_list_and_idle_slots_show_no_budget(compat: ServerProcess) -> None:
    post(compat, "/completion", {"prompt": "I believe", "n_predict": 3})
    slot = httpx.get(compat.base_url + "/slots").json()[0]
    assert slot["is_processing"] is False
    assert slot["next_token"][0]["n_remain"] == -1 and slot["next_token"][0]["n_decoded"] == 0


def test_metrics_as_llama_server(compat: ServerProcess) -> None:
    prompt = "the quick brown fox jumps over the lazy dog"
    before_cached = metric(compat, "prompt_tokens_cached_total")
    bodies = [post(compat, "/completion", {"prompt": prompt, "n_predict": 1}).json() for _ in range(2)]
    assert bodies[1]["timings"]["cache_n"] > 0
    assert metric(compat, "prompt_tokens_cached_total") - before_cached == sum(b["timings"]["cache_n"] for b in bodies)
    timings = bodies[0]["timings"]  # one token: it came from the prompt's logits, no decode step
    assert timings["predicted_per_second"] == 0.0 and timings["predicted_per_token_ms"] == 0.0
    decodes = metric(compat, "n_decode_total")
    assert post(compat, "/v1/embeddings", {"input": "goodbye world"}).status_code == 200
    assert metric(compat, "n_decode_total") == decodes + 1


def test_chat_input_tokens(compat: ServerProcess) -> None:
    res = post(compat, "/v1/chat/completions/input_tokens", CHAT)
    assert res.status_code == 200 and res.json()["input_tokens"] > 5


class _Capture(BaseHTTPRequestHandler):
    seen: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        _Capture.seen = {k.lower(): v for k, v in self.headers.items()}
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"captured")

    def do_POST(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_cors_proxy_forwards_only_explicit_headers(compat: ServerProcess) -> None:
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        url = f"{compat.base_url}/cors-proxy?url=http://127.0.0.1:{target.server_port}/capture"
        res = httpx.get(url, headers={"Authorization": "Bearer mine", "Cookie": "s=1",
                                      "X-Llama-Server-Proxy-Header-Accept": "application/json"})
        assert res.status_code == 200 and res.text == "captured"
        assert _Capture.seen["accept"] == "application/json"
        assert "authorization" not in _Capture.seen and "cookie" not in _Capture.seen
        empty = httpx.post(f"{compat.base_url}/cors-proxy?url=http://127.0.0.1:{target.server_port}/", json={})
        assert empty.status_code == 204 and empty.content == b""
    finally:
        target.shutdown()
        target.server_close()
    assert httpx.get(f"{compat.base_url}/cors-proxy?url=ftp://example.com/").status_code == 400
    own = httpx.get(f"{compat.base_url}/cors-proxy?url={compat.base_url}/models", timeout=60)
    assert own.status_code == 200 and "data" in own.json()


def _sleeping(server: ServerProcess) -> bool:
    body = httpx.get(server.base_url + "/props", timeout=60).json()
    return bool(body["is_sleeping"])


def _wait_for_sleep(server: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _sleeping(server):
        assert time.monotonic() < deadline, "the server did not fall asleep"
        time.sleep(0.1)


def test_sleep_mode(sleepy: ServerProcess) -> None:
    # without --ui-mcp-proxy the proxy route is refused, as llama-server's
    refused = httpx.get(sleepy.base_url + "/cors-proxy")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "feature_disabled"
    assert post(sleepy, "/completion", {"prompt": "Hello", "n_predict": 4, "ignore_eos": True}).status_code == 200
    httpx.get(sleepy.base_url + "/metrics")  # the scrape that starts an empty window
    awake = httpx.get(sleepy.base_url + "/metrics").text
    _wait_for_sleep(sleepy)
    assert httpx.get(sleepy.base_url + "/health").status_code == 200
    assert httpx.get(sleepy.base_url + "/models").json()["data"][0]["id"].endswith(".gguf")
    assert httpx.get(sleepy.base_url + "/metrics").text == awake  # served from the snapshot
    assert _sleeping(sleepy)  # none of those woke the model
    res = post(sleepy, "/tokenize", {"content": "Hello"})
    assert res.status_code == 200 and res.json()["tokens"]
    assert not _sleeping(sleepy)
    assert metric(sleepy, "tokens_predicted_total") == 4  # counters survive the sleep
    assert "loaded" in json.dumps(httpx.get(sleepy.base_url + "/models").json())


def test_undefined_names_add_to_strings_as_empty() -> None:
    """firefunction-v2's template appends an undefined `functions` to a string."""
    from pyllama.chat.jinja_env import TemplateError, render

    assert render("{{ 'suffix' + functions + '!' }}", {}) == "suffix!"
    with pytest.raises(TemplateError):
        render("{{ 1 + functions }}", {})
