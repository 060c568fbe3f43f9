"""Resumable streams (llama-server's server-stream): a stream that names its conversation
(`X-Conversation-Id`) survives its client; the client reattaches with GET /v1/stream and
gets the rest of the same generation, which never restarts.

A real server (SmolLM2, 2 slots) with a short --stream-detach-timeout, real clients:
httpx streaming and curl, real disconnects (the client closes its socket mid-stream).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess

DETACH_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def srv(smollm2_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "--metrics", "--stream-detach-timeout",
                            str(DETACH_TIMEOUT)], log_name="streams")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def chat_body(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"stream": True, "max_tokens": max_tokens, "temperature": 0, "seed": 7,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}], **extra}


def parse_sse(text: str) -> list[Any]:
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block[:200]
            payload = block[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def content_of(events: list[Any]) -> str:
    return "".join((e["choices"][0]["delta"].get("content") or "") for e in events
                   if isinstance(e, dict) and e.get("choices"))


def final_timings(events: list[Any]) -> dict[str, Any]:
    timed = [e for e in events if isinstance(e, dict) and "timings" in e]
    assert timed, "no chunk with timings"
    result: dict[str, Any] = timed[-1]["timings"]
    return result


def lookup(srv: ServerProcess, *ids: str) -> list[dict[str, Any]]:
    r = httpx.post(srv.base_url + "/v1/streams/lookup", json={"conversation_ids": list(ids)}, timeout=30)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


def start_and_drop(srv: ServerProcess, conv: str, body: dict[str, Any], n_events: int) -> bytes:
    """Open a stream, read `n_events` SSE events, then close the connection: the bytes read."""
    received = b""
    with httpx.Client(timeout=120) as client, client.stream(
            "POST", srv.base_url + "/v1/chat/completions", json=body, headers={"X-Conversation-Id": conv}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            received += chunk
            if received.count(b"\n\n") >= n_events:
                break
    return received  # leaving the block closes the socket mid-stream


def tokens_predicted(srv: ServerProcess) -> float:
    for line in httpx.get(srv.base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return float(line.split()[1])
    raise AssertionError("no llamacpp:tokens_predicted_total")


def wait_idle(srv: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(srv.base_url + "/health", timeout=10).json().get("slots_processing") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the slots never became idle")


def test_reattach_gets_the_rest_of_the_same_generation(srv: ServerProcess) -> None:
    wait_idle(srv)
    whole = httpx.post(srv.base_url + "/v1/chat/completions", json=chat_body(40), timeout=120)
    uninterrupted = parse_sse(whole.text)

    before = tokens_predicted(srv)
    first = start_and_drop(srv, "conv-a", chat_body(40), 3)
    time.sleep(0.3)
    sessions = lookup(srv, "conv-a")
    assert [s["conversation_id"] for s in sessions] == ["conv-a"]
    with httpx.Client(timeout=120) as client:
        rest = client.get(srv.base_url + "/v1/stream", params={"conv_id": "conv-a", "from": len(first)})
    assert rest.status_code == 200
    assert rest.headers["Content-Type"].startswith("text/event-stream")
    events = parse_sse((first + rest.content).decode("utf-8"))
    assert events[-1] == "[DONE]"
    ids = {e["id"] for e in events if isinstance(e, dict)}
    assert len(ids) == 1, "one generation: every chunk carries the same completion id"
    timings = final_timings(events)
    assert timings["predicted_n"] == final_timings(uninterrupted)["predicted_n"] == 40
    assert content_of(events) == content_of(uninterrupted)
    assert tokens_predicted(srv) - before == 40, "the model generated the reply once, not again"
    # the session is finished and holds every byte; a replay from 0 is the whole stream
    (done,) = lookup(srv, "conv-a")
    assert done["is_done"] and done["total_bytes"] == len(first) + len(rest.content)
    assert done["completed_at"] >= done["started_at"] > 0
    replay = httpx.get(srv.base_url + "/v1/stream", params={"conv_id": "conv-a", "from": 0}, timeout=60)
    assert replay.content == first + rest.content


def test_generation_runs_on_while_detached(srv: ServerProcess) -> None:
    """Nobody reads the stream for a while: it keeps generating, and a reattach from 0 still works."""
    wait_idle(srv)
    start_and_drop(srv, "conv-b", chat_body(15), 2)
    deadline = time.monotonic() + 60
    while not lookup(srv, "conv-b")[0]["is_done"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    events = parse_sse(httpx.get(srv.base_url + "/v1/stream", params={"conv_id": "conv-b"}, timeout=60).text)
    assert final_timings(events)["predicted_n"] == 15
    assert events[-1] == "[DONE]"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_reattach_with_curl(srv: ServerProcess) -> None:
    wait_idle(srv)
    url = srv.base_url + "/v1/chat/completions"
    cut = subprocess.run(["curl", "-sN", "--max-time", "1.5", url, "-H", "Content-Type: application/json",
                          "-H", "X-Conversation-Id: conv-curl", "-d", json.dumps(chat_body(60))],
                         capture_output=True, timeout=60)
    assert cut.returncode == 28, "curl should have been cut off by --max-time mid-stream"
    rest = subprocess.run(["curl", "-sN", f"{srv.base_url}/v1/stream?conv_id=conv-curl&from={len(cut.stdout)}"],
                          capture_output=True, timeout=120, check=True)
    events = parse_sse((cut.stdout + rest.stdout).decode("utf-8"))
    assert final_timings(events)["predicted_n"] == 60
    assert len({e["id"] for e in events if isinstance(e, dict)}) == 1


def test_unread_stream_is_cancelled_after_the_detach_timeout(srv: ServerProcess) -> None:
    wait_idle(srv)
    start_and_drop(srv, "conv-c", chat_body(4000, ignore_eos=True), 2)
    (s1,) = lookup(srv, "conv-c")
    time.sleep(1.0)
    (s2,) = lookup(srv, "conv-c")
    assert not s2["is_done"] and s2["total_bytes"] > s1["total_bytes"], "still generating after the disconnect"
    deadline = time.monotonic() + DETACH_TIMEOUT + 30
    while lookup(srv, "conv-c"):
        assert time.monotonic() < deadline, "the abandoned stream was never dropped"
        time.sleep(0.2)
    wait_idle(srv, timeout=10)  # its slot is free again
    r = httpx.get(srv.base_url + "/v1/stream", params={"conv_id": "conv-c"}, timeout=30)
    assert r.status_code == 404
    assert r.json()["error"] == {"code": 404, "message": "Stream not found or expired", "type": "not_found_error"}


def test_a_reader_keeps_the_stream_alive_and_delete_stops_it(srv: ServerProcess) -> None:
    wait_idle(srv)
    first = start_and_drop(srv, "conv-d", chat_body(4000, ignore_eos=True), 2)
    got = b""
    t0 = time.monotonic()
    with httpx.Client(timeout=120) as client, client.stream(
            "GET", srv.base_url + "/v1/stream", params={"conv_id": "conv-d", "from": len(first)}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            got += chunk
            if time.monotonic() - t0 > DETACH_TIMEOUT + 2 and lookup(srv, "conv-d"):
                # attached past the detach timeout and still alive: now the explicit Stop
                d = client.delete(srv.base_url + "/v1/stream", params={"conv_id": "conv-d"})
                assert d.status_code == 204
                break
    assert lookup(srv, "conv-d") == []
    wait_idle(srv, timeout=20)
    assert httpx.delete(srv.base_url + "/v1/stream", params={"conv_id": "conv-d"}, timeout=10).status_code == 204


def test_attached_client_sees_a_clean_end_on_delete(srv: ServerProcess) -> None:
    wait_idle(srv)
    with httpx.Client(timeout=120) as client, client.stream(
            "POST", srv.base_url + "/v1/chat/completions", json=chat_body(4000, ignore_eos=True),
            headers={"X-Conversation-Id": "conv-e"}) as r:
        text = b""
        for chunk in r.iter_raw():
            text += chunk
            if text.count(b"\n\n") == 3:
                assert httpx.delete(srv.base_url + "/v1/stream", params={"conv_id": "conv-e"},
                                    timeout=10).status_code == 204
    assert text.endswith(b"data: [DONE]\n\n")
    wait_idle(srv, timeout=20)


def test_replacing_request_cancels_the_previous_stream(srv: ServerProcess) -> None:
    wait_idle(srv)
    start_and_drop(srv, "conv-f", chat_body(4000, ignore_eos=True), 2)
    second = httpx.post(srv.base_url + "/v1/chat/completions", json=chat_body(5),
                        headers={"X-Conversation-Id": "conv-f"}, timeout=120)
    assert final_timings(parse_sse(second.text))["predicted_n"] == 5
    wait_idle(srv, timeout=20)  # the first generation was cancelled, not left running
    (s,) = lookup(srv, "conv-f")
    assert s["is_done"] and s["total_bytes"] == len(second.content)


def test_errors_and_lookup_rules(srv: ServerProcess) -> None:
    base = srv.base_url
    r = httpx.get(base + "/v1/stream", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Missing conversation id in path"
    assert httpx.delete(base + "/v1/stream", timeout=10).status_code == 400
    r = httpx.post(base + "/v1/chat/completions", json=chat_body(5), headers={"X-Conversation-Id": "m::org/x"},
                   timeout=60)
    assert r.status_code == 200
    r = httpx.get(base + "/v1/stream", params={"conv_id": "m::org/x", "from": "abc"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid 'from' offset"
    # an id matches itself and its `<id>::<model>` variants; nothing else is listed
    assert [s["conversation_id"] for s in lookup(srv, "m")] == ["m::org/x"]
    assert lookup(srv, "nobody") == []
    assert httpx.post(base + "/v1/streams/lookup", content=b"{not json", timeout=10).status_code == 400
    for body in (b"[]", b'{"conversation_ids": "m"}', b'{"conversation_ids": [1, null, ""]}'):
        r = httpx.post(base + "/v1/streams/lookup", content=body, timeout=10)
        assert r.status_code == 200 and r.json() == []
    # a request refused before streaming leaves no session behind
    too_long = {**chat_body(5), "messages": [{"role": "user", "content": "lighthouse " * 3000}]}
    r = httpx.post(base + "/v1/chat/completions", json=too_long, headers={"X-Conversation-Id": "bad"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"
    assert lookup(srv, "bad") == []


# -- a request that waits for its model (here: a sleeping server reloading it) -------------

@pytest.fixture(scope="module")
def sleepy(smollm2_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["-m", str(smollm2_path), "-c", "1024", "-np", "1", "--sleep-idle-seconds", "1"],
                           log_name="streams-sleepy")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def wait_asleep(srv: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not httpx.get(srv.base_url + "/props", timeout=10).json().get("is_sleeping"):
        assert time.monotonic() < deadline, "the server never fell asleep"
        time.sleep(0.2)


def test_a_hang_up_while_the_model_loads_still_gets_a_resumable_stream(sleepy: ServerProcess) -> None:
    """llama.cpp's test_stream_resumes_after_reload_during_model_load, on a reload from sleep."""
    wait_asleep(sleepy)
    body = json.dumps(chat_body(8))
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{sleepy.port}\r\n"
            f"Content-Type: application/json\r\nX-Conversation-Id: conv-sleep\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    with socket.create_connection(("127.0.0.1", sleepy.port)) as sock:
        sock.sendall(head.encode())
        time.sleep(0.3)  # the body is read (the session exists), the model is loading
    saw_503, replay = False, None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = httpx.get(sleepy.base_url + "/v1/stream", params={"conv_id": "conv-sleep", "from": 0}, timeout=60)
        if r.status_code == 503:
            saw_503 = True
            assert r.json()["error"]["message"] == "Stream owner model is loading, retry later"
        elif r.status_code == 200 and "data: " in r.text:
            replay = r
            break
        time.sleep(0.1)
    assert saw_503, "a resume during the load did not answer 503"
    assert replay is not None, "the session never became resumable after the client disconnect"
    events = parse_sse(replay.text)
    assert events[-1] == "[DONE]" and final_timings(events)["predicted_n"] == 8


def test_a_stop_while_the_model_loads_cancels_the_request(sleepy: ServerProcess) -> None:
    """llama.cpp's test_stream_stop_during_model_load."""
    import threading

    wait_asleep(sleepy)
    outcome: list[httpx.Response] = []

    def post() -> None:
        outcome.append(httpx.post(sleepy.base_url + "/v1/chat/completions", json=chat_body(200),
                                  headers={"X-Conversation-Id": "conv-stop"}, timeout=120))

    thread = threading.Thread(target=post)
    thread.start()
    deadline = time.monotonic() + 30
    while httpx.get(sleepy.base_url + "/v1/stream", params={"conv_id": "conv-stop"}, timeout=10).status_code != 503:
        assert time.monotonic() < deadline and thread.is_alive(), "never saw the pending session"
        time.sleep(0.05)
    assert httpx.delete(sleepy.base_url + "/v1/stream", params={"conv_id": "conv-stop"}, timeout=10).status_code == 204
    thread.join(120)
    (r,) = outcome
    assert r.status_code == 400 and "cancelled" in r.text
    assert httpx.get(sleepy.base_url + "/v1/stream", params={"conv_id": "conv-stop"}, timeout=10).status_code == 404
    assert lookup(sleepy, "conv-stop") == []
