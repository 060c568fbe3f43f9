"""The preparation process (asgi/prep_process.py): large bodies are parsed, templated and
tokenized in a child process, with the same answers as in-process, and the server
survives that child being stopped, killed or slow.

A body is made "large" without changing its meaning by padding it with JSON whitespace
past --prep-process-bytes, so every request is sent twice, small (in-process) and padded
(through the child), to the same server. That the padded ones really go through the
child is shown by freezing it (SIGSTOP): padded requests then wait, small ones do not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess, start

THRESHOLD = 64 << 10
TEXT = "Hello wörld! 12345 \u4f60\u597d <|im_start|> " * 300


def child_pid(server: ServerProcess, timeout: float = 30.0) -> int:
    """The server's preparation process (a spawned child of the server's process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == server.proc.pid and b"spawn_main" in cmdline:
                return int(entry)
        time.sleep(0.2)
    raise AssertionError("the server has no preparation process")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def post(client: httpx.Client, path: str, body: dict[str, Any], pad: int = 0) -> httpx.Response:
    data = json.dumps(body).encode()
    data += b" " * max(0, pad - len(data))
    return client.post(path, content=data, headers={"Content-Type": "application/json"})


def comparable(response: httpx.Response) -> Any:
    """The answer without what differs between two identical requests (ids, times, cache use)."""
    value = response.json()
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            for key in ("id", "created", "timings", "usage", "system_fingerprint", "tokens_cached", "id_slot"):
                item.pop(key, None)
    return response.status_code, value


@pytest.fixture(scope="module")
def prep_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-to", "20",
                      "--prep-process-bytes", str(THRESHOLD)], "prep")


CASES: list[tuple[str, dict[str, Any]]] = [
    ("/tokenize", {"content": TEXT}),
    ("/tokenize", {"content": TEXT, "with_pieces": True}),
    ("/tokenize", {"content": ["ab", 5, TEXT, 7], "add_special": True, "parse_special": False}),
    ("/tokenize", {"content": 5}),  # 400
    ("/tokenize", {"content": "x", "with_pieces": "yes"}),  # 400
    ("/tokenize", {}),
    ("/apply-template", {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXT}]}),
    ("/apply-template", {"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": False}),
    ("/apply-template", {"messages": "nope"}),  # 400
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6, "temperature": 0}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": TEXT[:3000]}], "max_tokens": 4, "temperature": 0,
                              "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 20000}], "max_tokens": 4}),  # too long: 400
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "model": "any-name", "max_tokens": 3,
                              "temperature": 0, "tools": [{"type": "function", "function": {
                                  "name": "get_time", "parameters": {"type": "object", "properties": {}}}}]}),
    ("/completion", {"prompt": TEXT[:2000], "n_predict": 4, "temperature": 0, "cache_prompt": False}),
    ("/completion", {"prompt": ["a b", "c d"], "n_predict": 2, "temperature": 0, "cache_prompt": False}),
    ("/completion", {"prompt": [1, 2, 3, 999999], "n_predict": 2}),  # token id out of range: 400
    ("/completion", {"prompt": "x " * 20000, "n_predict": 2}),  # too long: 400
    ("/completion", {"n_predict": 2}),  # no prompt: 400
    ("/completion", {"prompt": 5, "temperature": "hot"}),  # the parameter's error comes first: 400
    ("/v1/completions", {"prompt": "Once upon", "max_tokens": 4, "temperature": 0, "cache_prompt": False}),
    ("/v1/completions", {"prompt": "Once", "echo": True}),  # 400
]


@pytest.mark.parametrize(("path", "body"), CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CASES)])
def test_same_answers_in_process_and_in_the_child(prep_server: ServerProcess, path: str, body: dict[str, Any]) -> None:
    with prep_server.client() as client:
        small = post(client, path, body)
        large = post(client, path, body, pad=THRESHOLD + 10)
    assert small.status_code < 500
    assert comparable(large) == comparable(small)


def test_broken_large_bodies_are_400_like_small_ones(prep_server: ServerProcess) -> None:
    with prep_server.client() as client:
        for raw in (b'{"content": "x",}', b"\xff\xfe", b"[1, 2]", b"{\"content\": NaN}", b"[" * 5000 + b"]" * 5000):
            small = client.post("/tokenize", content=raw, headers={"Content-Type": "application/json"})
            large = client.post("/tokenize", content=raw + b" " * THRESHOLD, headers={"Content-Type": "application/json"})
            assert small.status_code == large.status_code == 400, raw[:20]
            assert small.json()["error"]["message"].split(" (line")[0] == large.json()["error"]["message"].split(" (line")[0]


def test_streamed_chat_through_the_child(prep_server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "Count to five"}], "max_tokens": 8, "temperature": 0, "stream": True}

    def content(pad: int) -> str:
        with prep_server.client() as client:
            res = post(client, "/v1/chat/completions", body, pad)
        assert res.status_code == 200
        events = [json.loads(line[6:]) for line in res.text.splitlines() if line.startswith("data: {")]
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])

    assert content(THRESHOLD + 1) == content(0) != ""


def test_a_large_answer_arrives_whole(prep_server: ServerProcess) -> None:
    """A 2 MB answer goes out in slices (asgi.http.SlicedBody): same bytes, right length."""
    body = {"content": "word " * 60000}
    with prep_server.client() as client:
        ids = post(client, "/tokenize", body).json()["tokens"]
        res = post(client, "/tokenize", {**body, "with_pieces": True})
    assert len(res.content) > 1 << 20 and int(res.headers["Content-Length"]) == len(res.content)
    assert [t["id"] for t in res.json()["tokens"]] == ids and len(ids) == 60001  # 60,000 words + the trailing space


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_large_requests_wait_for_the_child_small_ones_do_not(prep_server: ServerProcess) -> None:
    pid = child_pid(prep_server)
    body = {"content": "hello world"}
    os.kill(pid, signal.SIGSTOP)
    try:
        thread, out = _in_thread(lambda: post(prep_server.client(), "/tokenize", body, THRESHOLD + 1))
        time.sleep(1.0)
        assert not out, "a large body was answered while the preparation process was frozen"
        t0 = time.monotonic()
        with prep_server.client() as client:
            assert post(client, "/tokenize", body).json() == {"tokens": [28120, 905]}
        assert time.monotonic() - t0 < 5
        assert httpx.get(prep_server.base_url + "/health", timeout=5).status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    thread.join(30)
    assert out and out[0].status_code == 200 and out[0].json() == {"tokens": [28120, 905]}


def test_queue_of_large_requests_is_bounded(prep_server: ServerProcess) -> None:
    from asgi.prep_process import MAX_WAITING

    pid = child_pid(prep_server)
    os.kill(pid, signal.SIGSTOP)
    threads = []
    try:
        for _ in range(MAX_WAITING + 3):
            threads.append(_in_thread(lambda: post(prep_server.client(), "/tokenize", {"content": "hi"}, THRESHOLD + 1)))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(len(out) for _, out in threads) < 3:
            time.sleep(0.1)
        refused = [out[0] for _, out in threads if out]
        assert len(refused) >= 3 and all(r.status_code == 503 and "Retry-After" in r.headers for r in refused)
    finally:
        os.kill(pid, signal.SIGCONT)
    for thread, _ in threads:
        thread.join(30)
    statuses = sorted(out[0].status_code for _, out in threads)
    assert statuses.count(200) == MAX_WAITING and statuses.count(503) == 3, statuses


def test_killed_child_is_restarted(prep_server: ServerProcess) -> None:
    body = {"content": "hello world"}
    old = child_pid(prep_server)
    os.kill(old, signal.SIGKILL)
    while alive(old):
        time.sleep(0.05)
    with prep_server.client() as client:  # killed while idle: the next large request starts a new one
        res = post(client, "/tokenize", body, THRESHOLD + 1)
    assert res.status_code == 200 and res.json() == {"tokens": [28120, 905]}
    assert child_pid(prep_server) != old


def test_child_killed_during_a_job_fails_that_request_alone(prep_server: ServerProcess) -> None:
    body = {"content": "hello world"}
    pid = child_pid(prep_server)
    os.kill(pid, signal.SIGSTOP)  # so the job is surely in the child when it dies
    thread, out = _in_thread(lambda: post(prep_server.client(), "/tokenize", body, THRESHOLD + 1))
    time.sleep(0.5)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(20)
    assert out, "the request hung after its preparation process died"
    assert time.monotonic() - t0 < 10
    res = out[0]
    assert res.status_code == 503
    assert "preparation process stopped" in res.json()["error"]["message"]
    with prep_server.client() as client:
        again = post(client, "/tokenize", body, THRESHOLD + 1)
    assert again.status_code == 200 and again.json() == {"tokens": [28120, 905]}


def test_a_job_longer_than_the_timeout_is_stopped(prep_server: ServerProcess) -> None:
    pid = child_pid(prep_server)
    os.kill(pid, signal.SIGSTOP)  # a job that never ends; the server's -to is 20 s
    try:
        t0 = time.monotonic()
        with prep_server.client() as client:
            res = post(client, "/tokenize", {"content": "x"}, THRESHOLD + 1)
        took = time.monotonic() - t0
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert res.status_code == 503 and "longer than 20 s" in res.json()["error"]["message"]
    assert 15 < took < 40
    assert not alive(pid)
    with prep_server.client() as client:
        assert post(client, "/tokenize", {"content": "x"}, THRESHOLD + 1).status_code == 200


def test_sigterm_stops_the_child(prep_server: ServerProcess) -> None:
    """Last in this file: it stops the module's server."""
    pid = child_pid(prep_server)
    prep_server.proc.send_signal(signal.SIGTERM)
    assert prep_server.proc.wait(20) == 0
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_router_mode_prepares_with_each_models_template(multi_server: ServerProcess) -> None:
    """--config-file with two aliases of one GGUF and different chat templates: the child
    renders each request with the template of the model it names."""
    messages = [{"role": "user", "content": "hi"}]
    with multi_server.client() as client:
        prompts = {}
        for model in ("smol-chatml", "smol-llama2"):
            small = post(client, "/apply-template", {"model": model, "messages": messages})
            large = post(client, "/apply-template", {"model": model, "messages": messages}, 1 << 20)
            assert small.status_code == large.status_code == 200
            assert small.json() == large.json()
            prompts[model] = large.json()["prompt"]
        assert "<|im_start|>" in prompts["smol-chatml"] and "[INST]" in prompts["smol-llama2"]
        unknown = post(client, "/apply-template", {"model": "nope", "messages": messages}, 1 << 20)
        assert unknown.status_code == 400 and "not found" in unknown.json()["error"]["message"]
