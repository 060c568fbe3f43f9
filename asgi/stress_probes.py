"""What the stress runs (asgi/stress*.py) read from the server and the machine: the load
average, a process's RSS, the tokens counter of /metrics, busy slots. Its own module so
the run modules share it without importing each other's command-line entry point."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

SLOW = 600.0  # seconds: a probe waits this long on a loaded machine before giving up


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tokens_predicted(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=SLOW).text
    match = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.M)
    if not match:
        raise RuntimeError("no llamacpp:tokens_predicted_total in /metrics: start the server with --metrics")
    return float(match.group(1))


def busy_slots(base: str) -> int:
    return sum(bool(s["is_processing"]) for s in httpx.get(base + "/slots", timeout=SLOW).json())


def seconds_until_idle(base: str, within: float) -> float:
    """Seconds until no slot is processing; inf if still busy after `within` seconds."""
    t0 = time.monotonic()
    while busy_slots(base):
        if time.monotonic() - t0 > within:
            return float("inf")
        time.sleep(0.02)
    return time.monotonic() - t0
