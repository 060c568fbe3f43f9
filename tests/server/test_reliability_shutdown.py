"""Graceful shutdown of a real server process on SIGTERM / SIGINT.

The listening socket closes at once; requests in flight get --shutdown-timeout seconds; a
stream still running then ends with an error event and [DONE] (a well-formed ending, not a
cut connection), a plain request still running gets a 503; the process exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess

BOUND = 2.0


def _start(smollm2_path: Path, name: str, bound: float = BOUND) -> ServerProcess:
    server = ServerProcess(["-m", str(smollm2_path), "-c", "1024", "-np", "2", "--shutdown-timeout", str(bound)],
                           log_name=name)
    server.wait_ready()
    return server


def test_sigterm_ends_inflight_requests_cleanly_and_exits_0(smollm2_path: Path) -> None:
    server = _start(smollm2_path, "sigterm")
    base = server.base_url
    got: dict[str, Any] = {"events": []}
    first_event = threading.Event()
    try:
        def stream() -> None:
            body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 100000, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", base + "/v1/completions", json=body, timeout=120) as res:
                got["stream_status"] = res.status_code
                for line in res.iter_lines():
                    if line.startswith("data: "):
                        got["events"].append(line[6:])
                        first_event.set()

        def plain() -> None:
            body = {"prompt": "Count: 1, 2, 3,", "n_predict": 100000, "ignore_eos": True}
            got["plain"] = httpx.post(base + "/completion", json=body, timeout=120)

        threads = [threading.Thread(target=stream), threading.Thread(target=plain)]
        for t in threads:
            t.start()
        assert first_event.wait(120), "no token before the signal"
        time.sleep(0.3)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(base + "/health", timeout=2)
        code = server.proc.wait(BOUND + 15)
        took = time.monotonic() - t0
        for t in threads:
            t.join(10)
        assert code == 0, server.log_path.read_text()[-2000:]
        assert BOUND <= took < BOUND + 10, took
        # the stream: tokens, then an error event saying why, then [DONE]
        events = got["events"]
        assert got["stream_status"] == 200 and events[-1] == "[DONE]", events[-3:]
        last = json.loads(events[-2])
        assert last["error"]["code"] == 503 and "shutting down" in last["error"]["message"]
        assert all("choices" in json.loads(e) for e in events[:-2]) and len(events) >= 3
        # the plain request: a 503 in the OpenAI shape, not a dropped connection
        plain = got["plain"]
        assert plain.status_code == 503 and "shutting down" in plain.json()["error"]["message"]
        log = server.log_path.read_text()
        assert "SIGTERM: stopping" in log and "cancelling 2 in-flight request(s)" in log and "Traceback" not in log
    finally:
        server.stop()


def test_sigint_lets_a_short_request_finish(smollm2_path: Path) -> None:
    """A request that can finish within --shutdown-timeout does, and the exit follows it at
    once (the bound is generous so a slow machine still finishes the six tokens)."""
    server = _start(smollm2_path, "sigint", bound=60)
    got: dict[str, Any] = {}
    try:
        def plain() -> None:
            body = {"prompt": "Count: 1, 2, 3,", "n_predict": 6, "ignore_eos": True}
            got["res"] = httpx.post(server.base_url + "/completion", json=body, timeout=120)

        thread = threading.Thread(target=plain)
        thread.start()
        deadline = time.monotonic() + 120
        while not any(s["is_processing"] for s in httpx.get(server.base_url + "/slots", timeout=120).json()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(75) == 0
        thread.join(10)
        res = got["res"]
        assert res.status_code == 200 and res.json()["tokens_predicted"] == 6  # finished within the bound
        assert "cancelling" not in server.log_path.read_text()
    finally:
        server.stop()
