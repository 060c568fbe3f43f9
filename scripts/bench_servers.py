"""pyllama-server next to llama-server over HTTP, alternating in one run, medians (issue 18).

    .venv/bin/python scripts/bench_servers.py --llama-server /work/peer/llama.cpp/build/bin/llama-server \
        --port-base 9200 --rounds 3 --parts np4,spec,threads

Both servers are started here on the same GGUF (default: the installed SmolLM2) and kept
up together; every round visits each configuration once, in an order that flips every
round (A B / B A), so whatever else runs on the machine weighs on both alike. A ratio is
the figure to read; the 1-minute load average is printed with every sample.

Parts:
  np4      `-np 4`: 4 concurrent greedy /completion streams (asgi.bench_http's client),
           aggregate tokens/s (all generated tokens / wall time, prompts included).
  spec     one slot, greedy: a prompt that asks to repeat a ~300-token code snippet and an
           ordinary chat prompt, on servers started with `--spec-type none`, `ngram-simple`
           and `ngram-map-k`; tokens/s from the server's own `timings.predicted_per_second`
           (decode only), plus draft_n / draft_n_accepted where reported.
  threads  one slot, tg tokens/s with `-t 1` and the default thread setting, on a quiet
           machine and with `python -c "while True: pass"` running beside it (started and
           stopped by this script around each busy sample).

It is a script, not part of the package: it starts processes and sockets, which neither
pyllama/ nor asgi/ do on their own behalf.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asgi import bench_http  # noqa: E402

SNIPPET = '''def merge_intervals(intervals):
    """Merge overlapping intervals and return them sorted by start."""
    if not intervals:
        return []
    intervals = sorted(intervals, key=lambda pair: pair[0])
    merged = [list(intervals[0])]
    for start, end in intervals[1:]:
        last = merged[-1]
        if start <= last[1]:
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return [tuple(pair) for pair in merged]


class LRUCache:
    def __init__(self, capacity):
        self.capacity = capacity
        self.items = {}
        self.order = []

    def get(self, key):
        if key not in self.items:
            return None
        self.order.remove(key)
        self.order.append(key)
        return self.items[key]

    def put(self, key, value):
        if key in self.items:
            self.order.remove(key)
        elif len(self.items) >= self.capacity:
            oldest = self.order.pop(0)
            del self.items[oldest]
        self.items[key] = value
        self.order.append(key)


def word_counts(text):
    counts = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
'''

CHATML = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
REPEAT_PROMPT = CHATML.format("Repeat the following Python code exactly, with no comments of your own:\n\n"
                              + SNIPPET)
CHAT_PROMPT = CHATML.format("Write a short story about a lighthouse keeper who finds a message in a bottle.")


def load1() -> float:
    return os.getloadavg()[0]


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(server: Server, log_dir: Path) -> None:
    log = open(log_dir / f"{server.name.replace(' ', '_')}.log", "wb")  # noqa: SIM115 (lives with the process)
    server.proc = subprocess.Popen([*server.argv, "--host", "127.0.0.1", "--port", str(server.port)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(servers: list[Server], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    for s in servers:
        while True:
            assert s.proc is not None
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode} (see its log)")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(s.url + "/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{s.name} not ready after {timeout:.0f} s")
            time.sleep(1)


def stop(servers: list[Server]) -> None:
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.terminate()
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


@contextlib.contextmanager
def running(servers: list[Server], log_dir: Path) -> Iterator[list[Server]]:
    try:
        for s in servers:
            start(s, log_dir)
        wait_ready(servers)
        yield servers
    finally:
        stop(servers)


@contextlib.contextmanager
def burner() -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2)  # let the scheduler see it
        yield
    finally:
        proc.kill()
        proc.wait()


def completion(url: str, prompt: str, n: int) -> dict[str, Any]:
    body = {"prompt": prompt, "n_predict": n, "temperature": 0.0, "top_k": 1, "cache_prompt": False,
            "ignore_eos": False}
    res = httpx.post(url + "/completion", json=body, timeout=900)
    res.raise_for_status()
    out: dict[str, Any] = res.json()
    return out


def order(servers: list[Server], r: int) -> list[Server]:
    return servers if r % 2 == 0 else servers[::-1]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def part_np4(args: argparse.Namespace, pyl: list[str], lcpp: list[str], log_dir: Path) -> str:
    np4 = ["-np", "4", "-c", str(4 * 2048)]
    servers = [Server("pyllama (default threads)", [*pyl, *np4], args.port_base),
               Server("llama-server (default threads)", [*lcpp, *np4], args.port_base + 1),
               Server("llama-server -t 1", [*lcpp, *np4, "-t", "1"], args.port_base + 2)]
    lines = []
    with running(servers, log_dir):
        for s in servers:  # warm-up
            asyncio.run(bench_http.run(s.url, 4, 4, 1))
        for r in range(args.rounds):
            for s in order(servers, r):
                ld = load1()
                res = asyncio.run(bench_http.run(s.url, 4, args.n_gen, 1))
                s.samples.setdefault("4", []).append(res["concurrent_ts"])
                s.samples.setdefault("1", []).append(res["single_ts"])
                s.samples.setdefault("load", []).append(ld)
                print(f"np4 round {r} {s.name}: 1 stream {res['single_ts']:.1f} t/s, 4 streams "
                      f"{res['concurrent_ts']:.1f} t/s (load {ld:.1f})", flush=True)
    py = servers[0]
    lines.append("| server | 1 stream t/s | 4 streams t/s (aggregate) | samples (4 streams) | load |")
    lines.append("|---|---:|---:|---|---|")
    for s in servers:
        lines.append(f"| {s.name} | {median(s.samples['1']):.1f} | {median(s.samples['4']):.1f} | "
                     f"{' / '.join(f'{x:.1f}' for x in s.samples['4'])} | "
                     f"{min(s.samples['load']):.1f}-{max(s.samples['load']):.1f} |")
    for ll in servers[1:]:
        lines.append(f"\nratio pyllama / {ll.name}, 4 streams: {median(py.samples['4']) / median(ll.samples['4']):.2f}x"
                     f"; 1 stream: {median(py.samples['1']) / median(ll.samples['1']):.2f}x")
    return "\n".join(lines)


def part_spec(args: argparse.Namespace, pyl: list[str], lcpp: list[str], log_dir: Path) -> str:
    types = ["none", "ngram-simple", "ngram-map-k"]
    servers: list[Server] = []
    port = args.port_base + 10
    for name, argv in (("pyllama", pyl), ("llama-server", lcpp)):
        for t in types:
            servers.append(Server(f"{name} {t}", [*argv, "-np", "1", "-c", "4096", "--spec-type", t], port))
            port += 1
    prompts = {"repeat": (REPEAT_PROMPT, args.n_repeat), "chat": (CHAT_PROMPT, 64)}
    with running(servers, log_dir):
        for s in servers:
            completion(s.url, CHAT_PROMPT, 4)
        for r in range(args.rounds):
            for key, (prompt, n) in prompts.items():
                for s in order(servers, r):
                    ld = load1()
                    out = completion(s.url, prompt, n)
                    t = out.get("timings", {})
                    tps = float(t.get("predicted_per_second", 0.0))
                    s.samples.setdefault(key, []).append(tps)
                    s.samples.setdefault("load", []).append(ld)
                    s.extra.setdefault(key, []).append((t.get("predicted_n"), t.get("draft_n"),
                                                        t.get("draft_n_accepted"), out.get("content", "")))
                    print(f"spec round {r} {key} {s.name}: {tps:.1f} t/s, n={t.get('predicted_n')} "
                          f"draft {t.get('draft_n')}/{t.get('draft_n_accepted')} (load {ld:.1f})", flush=True)
    lines = ["| server | prompt | none t/s | ngram-simple t/s (ratio) | ngram-map-k t/s (ratio) | drafted / accepted "
             "(simple; map-k) | same text as none |", "|---|---|---:|---:|---:|---|---|"]
    for i, name in enumerate(("pyllama", "llama-server")):
        base, simple, mapk = servers[3 * i: 3 * i + 3]
        for key in prompts:
            b = median(base.samples[key])
            cells = []
            for s in (simple, mapk):
                m = median(s.samples[key])
                cells.append(f"{m:.1f} ({m / b:.2f}x)" if b else f"{m:.1f}")
            drafts = "; ".join(f"{s.extra[key][-1][1]} / {s.extra[key][-1][2]}" for s in (simple, mapk))
            same = all(s.extra[key][-1][3] == base.extra[key][-1][3] for s in (simple, mapk))
            lines.append(f"| {name} | {key} | {b:.1f} | {cells[0]} | {cells[1]} | {drafts} | {'yes' if same else 'no'} |")
    loads = [x for s in servers for x in s.samples["load"]]
    lines.append(f"\nload average {min(loads):.1f}-{max(loads):.1f}; samples: "
                 + "; ".join(f"{s.name} {k} " + "/".join(f"{x:.1f}" for x in s.samples[k])
                             for s in servers for k in prompts))
    return "\n".join(lines)


def part_threads(args: argparse.Namespace, pyl: list[str], lcpp: list[str], log_dir: Path) -> str:
    servers = [Server("pyllama -t 1", [*pyl, "-np", "1", "-c", "2048", "-t", "1"], args.port_base + 20),
               Server("pyllama default", [*pyl, "-np", "1", "-c", "2048"], args.port_base + 21),
               Server("llama-server -t 1", [*lcpp, "-np", "1", "-c", "2048", "-t", "1"], args.port_base + 22),
               Server("llama-server default", [*lcpp, "-np", "1", "-c", "2048"], args.port_base + 23)]
    with running(servers, log_dir):
        for s in servers:
            completion(s.url, CHAT_PROMPT, 4)
        for r in range(args.rounds):
            for cond in (("quiet", "busy") if r % 2 == 0 else ("busy", "quiet")):
                ctx = burner() if cond == "busy" else contextlib.nullcontext()
                with ctx:
                    for s in order(servers, r):
                        ld = load1()
                        out = completion(s.url, CHAT_PROMPT, args.n_gen)
                        tps = float(out.get("timings", {}).get("predicted_per_second", 0.0))
                        s.samples.setdefault(cond, []).append(tps)
                        s.samples.setdefault("load_" + cond, []).append(ld)
                        print(f"threads round {r} {cond} {s.name}: {tps:.1f} t/s (load {ld:.1f})", flush=True)
    lines = ["| server | quiet t/s | with busy loop t/s | busy / quiet | load quiet | load busy |",
             "|---|---:|---:|---:|---|---|"]
    for s in servers:
        q, b = median(s.samples["quiet"]), median(s.samples["busy"])
        lq, lb = s.samples["load_quiet"], s.samples["load_busy"]
        lines.append(f"| {s.name} | {q:.1f} | {b:.1f} | {b / q:.2f}x | {min(lq):.1f}-{max(lq):.1f} | "
                     f"{min(lb):.1f}-{max(lb):.1f} |")
    lines.append("\nsamples: " + "; ".join(f"{s.name} {c} " + "/".join(f"{x:.1f}" for x in s.samples[c])
                                          for s in servers for c in ("quiet", "busy")))
    return "\n".join(lines)


PARTS = {"np4": part_np4, "spec": part_spec, "threads": part_threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pyllama-server", default=str(REPO / ".venv" / "bin" / "pyllama-server"),
                   help="command that starts pyllama-server (split like a shell)")
    p.add_argument("--pyllama-args", default="", help="extra arguments for pyllama-server (one string)")
    p.add_argument("--llama-server", default="/work/peer/llama.cpp/build/bin/llama-server")
    p.add_argument("--llama-args", default="", help="extra arguments for llama-server (one string)")
    p.add_argument("-m", "--model", default=None, help="GGUF (default: the installed SmolLM2)")
    p.add_argument("--port-base", type=int, default=9200, help="ports used: base .. base+23")
    p.add_argument("--parts", default="np4,spec,threads")
    p.add_argument("-r", "--rounds", type=int, default=3)
    p.add_argument("--n-gen", type=int, default=64, help="tokens per request for np4 and threads")
    p.add_argument("--n-repeat", type=int, default=320, help="tokens for the repeat prompt")
    p.add_argument("--log-dir", default=None, help="server logs (default: a temporary directory)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    model = args.model
    if model is None:
        from pyllama import model_files
        found = model_files.installed_default_model()
        if found is None:
            print("bench_servers: no installed SmolLM2; pass -m", file=sys.stderr)
            return 2
        model = str(found)
    log_dir = Path(args.log_dir or f"/tmp/bench_servers_{os.getpid()}")
    log_dir.mkdir(parents=True, exist_ok=True)
    pyl = [*shlex.split(args.pyllama_server), "-m", model, *args.pyllama_args.split()]
    lcpp = [args.llama_server, "-m", model, "--no-webui", *args.llama_args.split()]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model {Path(model).name}; logs in {log_dir}",
          flush=True)
    tables = []
    for part in args.parts.split(","):
        t0 = time.strftime("%H:%M", time.gmtime())
        table = PARTS[part](args, pyl, lcpp, log_dir)
        tables.append(f"## {part} ({t0}-{time.strftime('%H:%M UTC', time.gmtime())})\n\n{table}\n")
        print(tables[-1], flush=True)
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
