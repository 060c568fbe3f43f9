"""Continuous batching measured over HTTP: N concurrent /completion streams vs one alone.

    python -m asgi.bench_http --url http://127.0.0.1:8080 -n 4 --n-gen 64 -r 3

Works against any llama-server-compatible server (pyllama-server, llama.cpp's
llama-server), so both can be measured the same way: each round sends greedy requests
(temperature 0, ignore_eos, no prompt cache, a different prompt per request) as
streams, and records the time to the first streamed token and the tokens generated.
Aggregate tokens/second = all generated tokens / wall time from the first request sent
to the last one finished (prompt processing included, as a client sees it). Rounds of 1
and of N requests alternate, so a change in machine load hits both; medians are printed.

To start pyllama-server and llama-server side by side and alternate them in one run
(-np 4, speculative decoding, threads under load), see scripts/bench_servers.py, which
uses this module's client.

It lives in asgi/ because it is a client of the server (async httpx, no threads) and the
engine package must stay free of networking.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

PROMPT = "Request {i}: write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class StreamResult:
    ttft: float  # seconds from sending to the first token's event
    total: float  # seconds from sending to the final event
    n_predicted: int


@dataclass
class Round:
    n: int
    wall: float
    results: list[StreamResult]

    @property
    def tokens_per_second(self) -> float:
        return sum(r.n_predicted for r in self.results) / self.wall if self.wall else 0.0


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, n_gen: int) -> StreamResult:
    body = {"prompt": prompt, "n_predict": n_gen, "temperature": 0.0, "ignore_eos": True, "cache_prompt": False,
            "stream": True}
    t0 = time.perf_counter()
    ttft = 0.0
    n_predicted = 0
    async with client.stream("POST", url.rstrip("/") + "/completion", json=body) as res:
        if res.status_code != 200:
            raise RuntimeError(f"{url}: /completion answered {res.status_code}: {(await res.aread())[:200]!r}")
        async for line in res.aiter_lines():
            if not line.startswith("data: "):
                continue
            event: dict[str, Any] = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"{url}: error event {event['error']}")
            if not ttft and (event.get("content") or event.get("tokens")):
                ttft = time.perf_counter() - t0
            if event.get("stop"):
                n_predicted = int(event.get("tokens_predicted") or event.get("timings", {}).get("predicted_n", 0))
                break
    return StreamResult(ttft, time.perf_counter() - t0, n_predicted)


async def one_round(client: httpx.AsyncClient, url: str, n: int, n_gen: int, first_prompt: int) -> Round:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one_stream(client, url, PROMPT.format(i=first_prompt + i), n_gen)
                                     for i in range(n)))
    return Round(n, time.perf_counter() - t0, list(results))


async def run(url: str, n: int, n_gen: int, repetitions: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        props = (await client.get(url.rstrip("/") + "/props")).json()
        await one_round(client, url, 1, 4, 0)  # warm-up
        singles: list[Round] = []
        multis: list[Round] = []
        for r in range(max(1, repetitions)):
            singles.append(await one_round(client, url, 1, n_gen, 100 * r))
            multis.append(await one_round(client, url, n, n_gen, 100 * r + 1))
    single = statistics.median(x.tokens_per_second for x in singles)
    multi = statistics.median(x.tokens_per_second for x in multis)
    return {
        "url": url,
        "build_info": props.get("build_info", ""),
        "total_slots": props.get("total_slots"),
        "concurrent": n,
        "n_gen": n_gen,
        "single_ts": single,
        "concurrent_ts": multi,
        "ratio": multi / single if single else 0.0,
        "single_ttft_ms": 1e3 * statistics.median(x.results[0].ttft for x in singles),
        "concurrent_ttft_ms": 1e3 * statistics.median(max(r.ttft for r in x.results) for x in multis),
        "single_samples": [x.tokens_per_second for x in singles],
        "concurrent_samples": [x.tokens_per_second for x in multis],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asgi.bench_http", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of a llama-server-compatible server")
    p.add_argument("-n", "--concurrent", type=int, default=4, help="concurrent requests (default 4)")
    p.add_argument("--n-gen", type=int, default=64, help="tokens generated per request (default 64)")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    args = p.parse_args(argv)
    if args.concurrent < 1 or args.n_gen < 1:
        p.error("--concurrent and --n-gen must be positive")
    try:
        result = asyncio.run(run(args.url, args.concurrent, args.n_gen, args.repetitions))
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        print(f"bench_http: error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['build_info']} ({result['total_slots']} slots): 1 request {result['single_ts']:.2f} tok/s, "
              f"{args.concurrent} concurrent {result['concurrent_ts']:.2f} tok/s aggregate "
              f"({result['ratio']:.2f}x); TTFT {result['single_ttft_ms']:.0f} ms alone, "
              f"{result['concurrent_ttft_ms']:.0f} ms (slowest of {args.concurrent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
