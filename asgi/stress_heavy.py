"""`python -m asgi.stress heavy`: other clients' service while worst-case legal requests run.

Phases alternate in one run (alone, with the DRY request, alone, with the big chat, alone,
with the big /tokenize, ... for --rounds rounds), so the machine's load, which moves a lot
on a shared machine, hits both sides of each ratio. In each phase a greedy client streams
--n-gen tokens from /completion and its speed is taken between its first and last token;
all along, another client polls /health every 50 ms and the slowest answer per phase is
kept. A heavy request is sent over and over by its own thread for the whole phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

import httpx

from asgi.stress_probes import SLOW, load_average

# 32 distinct breakers of 40 bytes: the most dry_sequence_breakers the server keeps
# (longer ones are cut to 40 bytes and duplicates dropped, as llama.cpp does).
BREAKERS = [f"{i:02d} breaker string that is forty bytes long"[:40] for i in range(32)]
VICTIM_PROMPT = "Write a long story about a lighthouse keeper."


def heavy_bodies(chat_bytes: int, tokenize_bytes: int) -> dict[str, tuple[str, bytes]]:
    """The worst-case legal requests, encoded once (the client's own JSON work stays out
    of the measurement)."""
    dry = {"prompt": "The story begins", "n_predict": 256, "ignore_eos": True, "dry_multiplier": 0.8,
           "dry_allowed_length": 1, "dry_penalty_last_n": -1, "dry_sequence_breakers": BREAKERS,
           "samplers": ["dry", "top_k", "temperature"], "seed": 1}
    word = "word "
    chat = {"messages": [{"role": "user", "content": word * ((chat_bytes - 200) // len(word))}], "max_tokens": 1}
    tokenize = {"content": word * (tokenize_bytes // len(word)), "with_pieces": True}
    infill = {**dry, "samplers": ["dry", "infill", "top_k", "temperature"]}  # infill over the whole vocabulary
    # the same generation without DRY: what any second stream costs the greedy one (the baseline)
    plain = {k: v for k, v in dry.items() if not k.startswith("dry_")} | {"samplers": ["top_k", "temperature"]}
    return {
        "dry": ("/completion", json.dumps(dry).encode()),
        "infill": ("/completion", json.dumps(infill).encode()),
        "plain": ("/completion", json.dumps(plain).encode()),
        "chat": ("/v1/chat/completions", json.dumps(chat).encode()),
        "tokenize": ("/tokenize", json.dumps(tokenize).encode()),
    }


class HealthProbe(threading.Thread):
    """Polls /health every 50 ms; the slowest answer seen in each named phase."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.phase = "warm-up"
        self.worst: dict[str, float] = {}
        self.statuses: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=SLOW) as client:
            while not self.stop.is_set():
                phase = self.phase
                t0 = time.monotonic()
                self.statuses.add(client.get("/health").status_code)
                took = time.monotonic() - t0
                self.worst[phase] = max(self.worst.get(phase, 0.0), took)
                time.sleep(0.05)


class Heavy(threading.Thread):
    """Sends one heavy request again and again until stopped; counts answers by status."""

    def __init__(self, base: str, path: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.base, self.path, self.body = base, path, body
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.sent = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=SLOW) as client:
            while not self.stop.is_set():
                self.sent.set()
                res = client.post(self.path, content=self.body, headers={"Content-Type": "application/json"})
                self.statuses[res.status_code] = self.statuses.get(res.status_code, 0) + 1


def greedy_speed(base: str, n_gen: int, round_no: int) -> float:
    """Tokens per second of one greedy stream, first token to last (prompt reading excluded)."""
    body = {"prompt": f"{VICTIM_PROMPT} ({round_no})", "n_predict": n_gen, "temperature": 0, "ignore_eos": True,
            "cache_prompt": False, "stream": True}
    times: list[float] = []
    with httpx.stream("POST", base + "/completion", json=body, timeout=SLOW) as res:
        if res.status_code != 200:
            raise RuntimeError(f"/completion answered {res.status_code}")
        for line in res.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(f"error event: {event['error']}")
                if not event.get("stop"):
                    times.append(time.monotonic())
    if len(times) < 2:
        raise RuntimeError("the greedy stream sent fewer than two tokens")
    return (len(times) - 1) / (times[-1] - times[0])


def run_heavy(base: str, args: argparse.Namespace) -> dict[str, Any]:
    bodies = heavy_bodies(args.chat_bytes, args.tokenize_bytes)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(bodies)
    if unknown:
        raise RuntimeError(f"unknown heavy request kinds: {sorted(unknown)}")
    probe = HealthProbe(base)
    probe.start()
    alone: list[float] = []
    beside: dict[str, list[float]] = {k: [] for k in kinds}
    ratios: dict[str, list[float]] = {k: [] for k in kinds}
    heavy_statuses: dict[str, dict[int, int]] = {}
    loads = [load_average()]
    try:
        greedy_speed(base, 4, -1)  # warm-up
        for r in range(args.rounds):
            for kind in kinds:
                probe.phase = "alone"
                speed_alone = greedy_speed(base, args.n_gen, r)
                alone.append(speed_alone)
                path, body = bodies[kind]
                heavy = Heavy(base, path, body)
                probe.phase = kind
                heavy.start()
                heavy.sent.wait()
                time.sleep(args.head_start)  # the heavy request is under way (body sent, being read)
                speed = greedy_speed(base, args.n_gen, r)
                heavy.stop.set()
                heavy.join()
                probe.phase = "between"
                beside[kind].append(speed)
                ratios[kind].append(speed / speed_alone)
                for status, count in heavy.statuses.items():
                    heavy_statuses.setdefault(kind, {})[status] = heavy_statuses.get(kind, {}).get(status, 0) + count
                loads.append(load_average())
    finally:
        probe.stop.set()
        probe.join()
    result: dict[str, Any] = {"alone_tps_median": statistics.median(alone), "load_averages": loads}
    ok = probe.statuses <= {200}
    for kind in kinds:
        ratio = statistics.median(ratios[kind])
        worst = probe.worst.get(kind, 0.0)
        result[f"{kind}_tps_median"] = statistics.median(beside[kind])
        result[f"{kind}_ratio_median"] = ratio
        result[f"{kind}_ratios"] = [round(x, 3) for x in ratios[kind]]
        result[f"{kind}_health_worst_s"] = worst
        result[f"{kind}_answers"] = heavy_statuses.get(kind, {})
        ok = ok and ratio >= 0.5 and worst < 0.5
    result["alone_health_worst_s"] = probe.worst.get("alone", 0.0)
    result["health_statuses"] = sorted(probe.statuses)
    result["ok"] = ok
    return result


def add_heavy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--rounds", type=int, default=3, help="alone/beside pairs per heavy kind (3)")
    p.add_argument("--n-gen", type=int, default=32, help="tokens of each greedy stream (32)")
    p.add_argument("--kinds", default="dry,chat,tokenize", help="heavy requests to run beside: dry, chat, tokenize, infill, plain (a generation without DRY: the baseline) (default dry,chat,tokenize)")
    p.add_argument("--chat-bytes", type=int, default=60 << 20,
                   help="size of the big chat body (60 MiB: under the default --max-body-size, 64 MiB)")
    p.add_argument("--tokenize-bytes", type=int, default=4 << 20, help="size of the big /tokenize text (4 MiB)")
    p.add_argument("--head-start", type=float, default=0.3, help="seconds the heavy request runs before the greedy one")
