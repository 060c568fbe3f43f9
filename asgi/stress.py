"""Issue 19's acceptance bars measured against a running server, at full size.

    python -m asgi.stress reset --url http://127.0.0.1:8080            # server with --metrics
    python -m asgi.stress heavy --url http://127.0.0.1:8080 -r 3
    python -m asgi.stress load --url http://127.0.0.1:8080 --pid PID --seconds 60 --timeout 60
    python -m asgi.stress load --port 9010 -- -m model.gguf -np 4 --metrics   # starts the server

* `reset`: HTTP/2 streams whose RST_STREAM goes in the same write as their request, and
  HTTP/1.1 requests closed (FIN) right after their body, on every generating route with
  generations that would never end. Bar: fewer than 100 tokens generated in total (the
  server's /metrics counter) and every slot idle within 2 s of the last send.
* `heavy`: a greedy client's generation speed alone, then while the worst-case legal
  requests run beside it (the largest DRY breaker list with the infill sampler, a chat
  body as large as --max-body-size allows, a large /tokenize), alternating in one run so
  a change of machine load hits both; meanwhile another client polls /health. Bars: the
  slowest /health under 0.5 s, speed with / speed alone at least 0.5.
* `load`: N clients (half HTTP/1.1, half HTTP/2 with prior knowledge) for S seconds,
  streaming or not, a third of the requests abandoned at a random point (closed before an
  answer, or mid-stream). Bars: every answer a 200, or a 503 with Retry-After, within
  --timeout; no slot busy 5 s after the end; the server's RSS at the end within 10% of
  its RSS after the first quarter.

Every run prints its numbers and the load average, and exits 1 when a bar is missed. The
bounded versions of these checks are in tests/server/test_reliability_*.py. Like
asgi/bench_http.py this is a client of the server, so it lives in asgi/, not the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from asgi.stress_probes import SLOW, busy_slots, load_average, seconds_until_idle, tokens_predicted

# Requests that would generate without end (n_predict -1 + ignore_eos, context shift on).
ENDLESS: dict[str, Any] = {"prompt": "x", "n_predict": -1, "ignore_eos": True}
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/completion", {**ENDLESS, "stream": True}),
    ("/completion", ENDLESS),
    ("/v1/completions", {**ENDLESS, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1, "ignore_eos": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "ignore_eos": True, "stream": True}),
]


def http1_request(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(data), data))


def _port(base: str) -> tuple[str, int]:
    url = httpx.URL(base)
    return url.host, url.port or 80


def send_http1_closed(base: str, n: int) -> None:
    """n HTTP/1.1 requests, each on its own connection, closed right after the body."""
    host, port = _port(base)
    for i in range(n):
        path, body = ROUTES[i % len(ROUTES)]
        with socket.create_connection((host, port)) as sock:
            sock.sendall(http1_request(path, body))
            sock.shutdown(socket.SHUT_WR)


def send_http2_reset(base: str, n: int, per_write: int = 50) -> socket.socket:
    """n HTTP/2 streams on one connection (prior knowledge), each request followed by its
    RST_STREAM in the same write, `per_write` pairs per write. Returns the open socket:
    closing it is itself a disconnect, so the caller closes it after measuring."""
    import h2.config
    import h2.connection
    import h2.exceptions

    host, port = _port(base)
    sock = socket.create_connection((host, port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    def pump(wait: float) -> None:
        sock.settimeout(wait)
        try:
            incoming = sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return
        if incoming:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # frames for streams reset here
                conn.receive_data(incoming)
            sock.sendall(conn.data_to_send())

    sent = 0
    while sent < n:
        batch = 0
        while batch < per_write and sent < n:
            path, body = ROUTES[sent % len(ROUTES)]
            data = json.dumps(body).encode()
            while conn.outbound_flow_control_window < len(data):
                sock.sendall(conn.data_to_send())
                pump(1.0)  # the server's WINDOW_UPDATE for the connection
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [(":method", "POST"), (":path", path), (":scheme", "http"),
                                          (":authority", "x"), ("content-type", "application/json"),
                                          ("content-length", str(len(data)))])
            conn.send_data(stream_id, data, end_stream=True)
            conn.reset_stream(stream_id)
            sent += 1
            batch += 1
        sock.sendall(conn.data_to_send())
        pump(0.05)
    return sock


def run_reset(base: str, streams: int, http1: int, idle_within: float = 2.0) -> dict[str, Any]:
    """The abandoned-request bar: tokens generated by `streams` reset HTTP/2 streams and
    `http1` HTTP/1.1 requests closed at once, and the seconds until every slot is idle."""
    if seconds_until_idle(base, SLOW) == float("inf"):
        raise RuntimeError("slots busy before the run")
    before = tokens_predicted(base)
    prompt_before = tokens_predicted(base, "prompt_tokens_total")
    t0 = time.monotonic()
    sock = send_http2_reset(base, streams) if streams else None
    try:
        send_http1_closed(base, http1)
        sent = time.monotonic()
        busy_at_first = busy_slots(base)
        first_answer = time.monotonic() - sent  # how long the server takes to answer at all meanwhile
        idle = seconds_until_idle(base, max(idle_within, 30.0)) + first_answer
    finally:
        if sock is not None:
            sock.close()
    time.sleep(0.5)  # let the last cancelled step's tokens reach the counter
    tokens = tokens_predicted(base) - before
    prompt_tokens = tokens_predicted(base, "prompt_tokens_total") - prompt_before
    return {"streams": streams, "http1": http1, "send_seconds": sent - t0, "idle_seconds": idle,
            "first_slots_answer_seconds": first_answer, "busy_slots_in_first_answer": busy_at_first,
            "prompt_tokens": prompt_tokens, "tokens": tokens, "ok": tokens < 100 and idle <= idle_within,
            "load": load_average()}


@contextmanager
def serve(port: int, args: list[str]) -> Iterator[tuple[str, int]]:
    """Start `python -m asgi.main` on 127.0.0.1:port with args; yield (base URL, pid)."""
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "asgi.main", "--host", "127.0.0.1", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SLOW
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.3)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    from asgi.stress_heavy import add_heavy_args, run_heavy
    from asgi.stress_load import add_load_args, run_load

    argv = list(sys.argv[1:] if argv is None else argv)
    server_args: list[str] = []
    if "--" in argv:
        server_args = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    p = argparse.ArgumentParser(prog="python -m asgi.stress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {name: sub.add_parser(name) for name in ("reset", "heavy", "load")}
    for cmd in commands.values():
        cmd.add_argument("--url", help="a running server (else one is started: --port and the args after --)")
        cmd.add_argument("--port", type=int, default=9010, help="port for the server this tool starts")
        cmd.add_argument("--pid", type=int, help="the running server's process id (for RSS)")
        cmd.add_argument("-o", "--output", choices=["text", "json"], default="text")
    commands["reset"].add_argument("--streams", type=int, default=1000, help="HTTP/2 streams reset (1000)")
    commands["reset"].add_argument("--http1", type=int, default=100, help="HTTP/1.1 requests closed (100)")
    add_heavy_args(commands["heavy"])
    add_load_args(commands["load"])
    args = p.parse_args(argv)
    if args.url is None and not server_args:
        p.error("give --url of a running server, or the server's arguments after --")

    def run(base: str, pid: int | None) -> dict[str, Any]:
        if args.command == "reset":
            return run_reset(base, args.streams, args.http1)
        if args.command == "heavy":
            return run_heavy(base, args)
        return run_load(base, pid, args)

    try:
        if args.url:
            result = run(args.url.rstrip("/"), args.pid)
        else:
            with serve(args.port, server_args) as (base, pid):
                result = run(base, pid)
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        print(f"stress: error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    raise SystemExit(main())
