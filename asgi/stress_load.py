"""`python -m asgi.stress load`: many clients, HTTP/1.1 and HTTP/2, random hang-ups.

Even-numbered clients speak HTTP/1.1 (httpx), odd ones HTTP/2 with prior knowledge
(httpx over the h2 package), each on its own keep-alive connection. Each request is a
completion or a chat, streaming or not, of 2-16 tokens; about a third are abandoned at a
random point: before any answer (the request task is cancelled: HTTP/1.1 closes its
connection, HTTP/2 resets the stream) or after a few streamed events. Every answer that
is not abandoned must be a 200, or a 503 with a Retry-After header (the client then
waits that long), and come within --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from typing import Any

import httpx

from asgi.stress_probes import load_average, rss_kb, seconds_until_idle

PROMPTS = ["Tell me a joke.", "What is 2+2?", "Name a color.", "Say hello in French.", "Write one word.",
           "List three fruits.", "What is the capital of Italy?", "Describe the sky."]


class Stats:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.by_protocol: Counter[str] = Counter()

    def fail(self, what: str) -> None:
        self.outcomes["failed"] += 1
        if len(self.failures) < 20:
            self.failures.append(what)


def _request(rng: random.Random) -> tuple[str, dict[str, Any], bool]:
    n = rng.randint(2, 16)
    stream = rng.random() < 0.6
    if rng.random() < 0.5:
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                                        "max_tokens": n, "stream": stream}, stream
    return "/completion", {"prompt": rng.choice(PROMPTS), "n_predict": n, "stream": stream}, stream


async def _one(client: httpx.AsyncClient, rng: random.Random, timeout: float, stats: Stats, label: str) -> float:
    """One request; returns the seconds to wait before the next one (Retry-After on a 503)."""
    url, body, stream = _request(rng)
    abandon = rng.random() < 1 / 3
    cut_events = rng.randint(0, 3) if abandon and stream and rng.random() < 0.5 else None
    t0 = time.monotonic()

    async def go() -> tuple[int, dict[str, str], int]:
        events = 0
        async with client.stream("POST", url, json=body) as res:
            if res.status_code != 200 or not stream:
                await res.aread()
                return res.status_code, dict(res.headers), 0
            async for line in res.aiter_lines():
                if line.startswith("data: "):
                    events += 1
                    if '"error"' in line[:20]:
                        raise RuntimeError(f"error event {line[:200]}")
                    if cut_events is not None and events > cut_events:
                        return -1, {}, events  # hung up mid-stream
            return res.status_code, dict(res.headers), events

    try:
        if abandon and cut_events is None:  # hang up before the answer, at a random moment
            try:
                status, headers, _ = await asyncio.wait_for(go(), rng.uniform(0.0, 0.5))
            except TimeoutError:
                stats.outcomes["abandoned"] += 1
                return 0.0
            except ValueError:  # httpcore's HTTP/2 cancel path: "semaphore released too many times"
                stats.outcomes["abandoned_client_error"] += 1  # a client-library bug, not the server
                return 0.0
        else:
            status, headers, _ = await go()
    except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as exc:
        stats.fail(f"{label} {url}: {exc!r}"[:300])
        return 0.5
    took = time.monotonic() - t0
    stats.by_protocol[label] += 1
    if status == -1:
        stats.outcomes["abandoned"] += 1
        return 0.0
    stats.latencies.append(took)
    if took > timeout:
        stats.fail(f"{label} {url}: answered in {took:.1f} s, over --timeout {timeout} s")
    if status == 200:
        stats.outcomes["200"] += 1
        return 0.0
    if status == 503 and headers.get("retry-after", "").isdigit():
        stats.outcomes["503"] += 1
        return min(float(headers["retry-after"]), 5.0)
    stats.fail(f"{label} {url}: status {status} headers {headers}")
    return 0.5


async def _client(base: str, idx: int, stop_at: float, timeout: float, stats: Stats) -> None:
    rng = random.Random(idx)
    http2 = idx % 2 == 1
    label = "h2" if http2 else "h1"
    async with httpx.AsyncClient(base_url=base, timeout=timeout + 30, http1=not http2, http2=http2) as client:
        while time.monotonic() < stop_at:
            wait = await _one(client, rng, timeout, stats, label)
            if wait:
                await asyncio.sleep(wait)


def run_load(base: str, pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    loads = [load_average()]

    async def main() -> tuple[int | None, int | None]:
        stop_at = time.monotonic() + args.seconds
        clients = [asyncio.create_task(_client(base, i, stop_at, args.timeout, stats)) for i in range(args.clients)]
        await asyncio.sleep(args.seconds / 4)
        rss_first = rss_kb(pid) if pid else None
        loads.append(load_average())
        await asyncio.gather(*clients)
        return rss_first, rss_kb(pid) if pid else None

    if seconds_until_idle(base, 600) == float("inf"):
        raise RuntimeError("slots busy before the run")
    t0 = time.monotonic()
    rss_first, rss_end = asyncio.run(main())
    elapsed = time.monotonic() - t0
    idle = seconds_until_idle(base, 5.0)
    loads.append(load_average())
    lat = sorted(stats.latencies) or [0.0]
    rss_ok = rss_first is None or rss_end is None or abs(rss_end - rss_first) <= 0.10 * rss_first
    result: dict[str, Any] = {
        "clients": args.clients, "seconds": round(elapsed, 1), "timeout": args.timeout,
        "outcomes": dict(stats.outcomes), "by_protocol": dict(stats.by_protocol),
        "answered_per_s": (stats.outcomes["200"] + stats.outcomes["503"]) / elapsed,
        "latency_p50_s": statistics.median(lat), "latency_p95_s": lat[int(0.95 * (len(lat) - 1))],
        "latency_max_s": lat[-1], "idle_after_s": idle,
        "rss_mib_first_quarter": rss_first / 1024 if rss_first else None,
        "rss_mib_end": rss_end / 1024 if rss_end else None,
        "load_averages": loads, "failures": stats.failures,
    }
    result["ok"] = (not stats.outcomes["failed"] and idle <= 5.0 and rss_ok and stats.outcomes["200"] > 0
                    and stats.by_protocol["h1"] > 0 and stats.by_protocol["h2"] > 0)
    return result


def add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the clients keep sending (60)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="the bar for every answer, in seconds: the server's --timeout (60)")
