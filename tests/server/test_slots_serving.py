"""Parallel slots through a real server: concurrent streams, prompt cache speed, /metrics, cancellation.

The concurrency test runs its own `-np 4` server with `--numerics exact`: there every row
of a batch is computed independently of the others (as in llama.cpp's CPU kernels), so a
request batched with three others must give exactly the text it gives alone. With the
default fast numerics BLAS picks different kernels for different row counts and greedy
text may drift after a few tokens (docs/numerics.md). The other tests use the session's
shared server (fast numerics, 2 slots).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess, start

N_PREDICT = 8
PROMPTS = ["The capital of France is", "Once upon a time,", "def add(a, b):", "My favourite fruit is"]


@pytest.fixture(scope="module")
def four_slots(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "1024", "-np", "4", "--numerics", "exact"], "four-slots")


def wait_idle(server: ServerProcess, timeout: float = 30.0) -> None:
    """Leftovers of earlier tests (a stream a client abandoned) must be gone before measuring."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(s["is_processing"] for s in httpx.get(server.base_url + "/slots").json()):
            return
        time.sleep(0.1)
    pytest.fail("slots still busy before the test started")


async def timed_stream(client: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    body = {"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0.0, "cache_prompt": False, "stream": True}
    out: dict[str, Any] = {"text": "", "first": None, "end": None}
    async with client.stream("POST", "/completion", json=body) as res:
        assert res.status_code == 200
        async for line in res.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            out["text"] += event["content"]
            if out["first"] is None and event.get("tokens"):
                out["first"] = time.monotonic()
            if event["stop"]:
                out["end"] = time.monotonic()
                out["tokens_predicted"] = event["tokens_predicted"]
    return out


def test_four_concurrent_streams_progress_together_and_match_alone(four_slots: ServerProcess) -> None:
    with four_slots.client() as c:
        alone = []
        for p in PROMPTS:
            res = c.post("/completion", json={"prompt": p, "n_predict": N_PREDICT, "temperature": 0.0,
                                              "cache_prompt": False})
            assert res.status_code == 200
            alone.append(res.json()["content"])

    async def together() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=four_slots.base_url, timeout=300) as client:
            return list(await asyncio.gather(*(timed_stream(client, p) for p in PROMPTS)))

    streams = asyncio.run(together())
    assert [s["text"] for s in streams] == alone
    assert all(s["tokens_predicted"] == N_PREDICT for s in streams)
    # Continuous batching: every stream had its first token before any stream finished.
    assert max(s["first"] for s in streams) < min(s["end"] for s in streams)
    metrics_off = httpx.get(four_slots.base_url + "/metrics")
    assert metrics_off.status_code == 501  # no --metrics on this server


def first_token_time(server: ServerProcess, prompt: str) -> tuple[float, dict[str, Any]]:
    """Seconds until the first streamed token, and the final event."""
    t0 = time.monotonic()
    ttft = 0.0
    final: dict[str, Any] = {}
    with httpx.Client(timeout=300) as c, c.stream("POST", server.base_url + "/completion", json={
            "prompt": prompt, "n_predict": 2, "temperature": 0.0, "stream": True}) as res:
        assert res.status_code == 200
        for line in res.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if not ttft:
                    ttft = time.monotonic() - t0
                if event["stop"]:
                    final = event
    return ttft, final


@pytest.mark.slow
def test_shared_500_token_prefix_is_reused_and_answers_three_times_faster(server: ServerProcess) -> None:
    wait_idle(server)
    prefix = "Slots remember the prompts they have already read, token by token, in their cache. " * 30
    n_prefix = len(httpx.post(server.base_url + "/tokenize", json={"content": prefix}).json()["tokens"])
    assert n_prefix >= 500
    cold, first = first_token_time(server, prefix + "First question: what is a slot?")
    warm, second = first_token_time(server, prefix + "Second question: why cache prompts?")
    info = (first.get("timings"), second.get("timings"), first.get("id_slot"), second.get("id_slot"))
    # the cold request may reuse a few tokens of an earlier prompt (BOS, a word; from its slot or the
    # host prompt cache), never the 500-token prefix it has not seen
    assert first["tokens_cached"] < 20, info
    assert second["tokens_cached"] >= 500 and second["id_slot"] == first["id_slot"], info
    assert second["timings"]["prompt_n"] == second["tokens_evaluated"] - second["tokens_cached"], info
    assert warm <= cold / 3, (warm, cold)


def metric_values(server: ServerProcess) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    res = httpx.get(server.base_url + "/metrics")
    assert res.status_code == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(res.text):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


def test_metrics_counters_grow_by_the_tokens_processed(server: ServerProcess) -> None:
    wait_idle(server)
    before = metric_values(server)
    body = httpx.post(server.base_url + "/completion", timeout=120, json={
        "prompt": "Counting the tokens: one two three", "n_predict": 5, "temperature": 0.0,
        "cache_prompt": False, "ignore_eos": True}).json()
    after = metric_values(server)
    assert body["tokens_predicted"] == 5 and body["timings"]["prompt_n"] == body["tokens_evaluated"]

    def delta(name: str) -> float:
        return after[name] - before[name]

    # prometheus_client strips the "_total" of counters from family names, not from samples.
    assert delta("llamacpp:prompt_tokens_total") == body["tokens_evaluated"]
    assert delta("llamacpp:tokens_predicted_total") == 5
    # 4 decode steps after the prompt, which takes 2 in fast numerics (the last prompt token
    # goes alone: Scheduler._prompt_take) and samples the first token.
    assert delta("llamacpp:n_decode_total") == 6
    assert delta("llamacpp:prompt_seconds_total") > 0 and delta("llamacpp:tokens_predicted_seconds_total") > 0
    assert after["llamacpp:requests_processing"] == 0 and after["llamacpp:requests_deferred"] == 0
    assert after["llamacpp:kv_cache_tokens"] >= body["tokens_evaluated"] + 4
    assert 0 < after["llamacpp:kv_cache_usage_ratio"] < 1


def test_closing_a_stream_frees_its_slot_within_a_step(server: ServerProcess) -> None:
    """The slot's task is cancelled at the step after the client goes away: the task
    produces at most two more tokens (the step running when the close is noticed, plus one
    if the cancellation arrives while a step is already under way)."""
    wait_idle(server)
    before = metric_values(server)["llamacpp:tokens_predicted_total"]
    with httpx.Client(timeout=120) as c, c.stream("POST", server.base_url + "/completion", json={
            "prompt": "Count: 1, 2, 3,", "n_predict": 2000, "ignore_eos": True, "stream": True,
            "cache_prompt": False}) as res:
        lines = res.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                assert '"stop":false' in line.replace(" ", ""), line
                break
        busy = [s for s in httpx.get(server.base_url + "/slots").json() if s["is_processing"]]
        if not busy:  # say what the stream did next, to tell an early end from a wrong /slots
            rest = [x for _, x in zip(range(50), lines, strict=False) if x.startswith("data: ")]
            pytest.fail(f"no slot processing after the first token {line}; the stream went on with {rest[:3]} "
                        f"... {rest[-1:]} ({len(rest)} events read)")
        slot = busy[0]
    seen = httpx.get(server.base_url + "/slots").json()[slot["id"]]
    seen_decoded = seen["next_token"][0]["n_decoded"] if seen["is_processing"] else slot["next_token"][0]["n_decoded"]
    deadline = time.monotonic() + 20
    while httpx.get(server.base_url + "/slots").json()[slot["id"]]["is_processing"]:
        assert time.monotonic() < deadline, "slot still busy after the client disconnected"
        time.sleep(0.05)
    produced = metric_values(server)["llamacpp:tokens_predicted_total"] - before
    assert slot["next_token"][0]["n_decoded"] <= produced <= seen_decoded + 2
