"""Bad, odd, abandoned and heavy traffic against one real server (-np 4, SmolLM2).

* A Hypothesis fuzz run: >= 2,000 generated requests across every route the server
  documents in /openapi.json (each one sent, checked) (wrong types, out-of-range values, unknown enum values,
  huge/empty/unicode/nested JSON, non-JSON bodies, wrong methods, odd headers). No 5xx
  (except the 501 llama-server also gives for /infill on a model without FIM tokens), no
  request over its timeout, and the server still answers /health and a normal completion,
  every slot idle within 5 s and RSS within 10% of its level after a warm-up tenth of the
  run. Issue 19's inputs are among the values (JSON nested 20,000 deep in string fields,
  a 3,000-property schema, 10,000 nested grammar groups, static paths over 255 bytes).
  PYLLAMA_FUZZ_REQUESTS=5000 (or more) for the long run; the seed is fixed (derandomize).
* Disconnects: a client gone mid-prompt frees its slot; a reader that never reads its SSE
  stream does not slow the other slots.
* A load test: 32 concurrent streaming clients for PYLLAMA_LOAD_SECONDS (default 60) s, a
  third hanging up at random points; every finished stream is complete and well-formed,
  every slot idle at the end, RSS at the end within 10% of RSS after the first quarter.

Generations are kept tiny by the servers' own caps (-n 1 for the fuzz run) so it stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.models.lora_synth import write_adapter_for
from tests.server.conftest import ServerProcess, start

N_FUZZ = int(os.environ.get("PYLLAMA_FUZZ_REQUESTS", "2000"))
LOAD_SECONDS = float(os.environ.get("PYLLAMA_LOAD_SECONDS", "60"))
REQUEST_TIMEOUT = 60.0
SLOW = 180.0  # generous bounds for a loaded 2-core machine: the checks are about outcomes, not speed


# The host-memory prompt cache (llama-server's default: up to 8 GiB) keeps every distinct
# prompt until its limit: a bounded cache that fills during the warm-up, so the RSS checks
# below still measure leaks, not the cache growing to 8 GiB.
CACHE_RAM_MIB = "4"


@pytest.fixture(scope="module")
def fuzz_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Every optional route on (a LoRA adapter too); generations capped at one token (-n 1) to keep the run fast."""
    slots = tmp_path_factory.mktemp("fuzz-slots")
    adapter = write_adapter_for(smollm2_path, tmp_path_factory.mktemp("fuzz-lora") / "lora.gguf")
    yield from start(
        ["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-n", "1", "--embeddings", "--metrics", "--props",
         "--slot-save-path", str(slots), "--lora", str(adapter), "--max-prompts", "2", "--max-queue", "512", "--max-body-size", "262144",
         "--cache-ram", CACHE_RAM_MIB],
        "fuzz",
    )


@pytest.fixture(scope="module")
def busy_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    """-np 4 for the disconnect and load tests; -b 64 reads prompts in several steps."""
    yield from start(["-m", str(smollm2_path), "-c", "4096", "-np", "4", "-n", "16", "-b", "64", "--cache-ram", CACHE_RAM_MIB],
                     "traffic")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def slots_idle(base: str, timeout: float = SLOW) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    slots: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        slots = httpx.get(base + "/slots", timeout=SLOW).json()
        if not any(s["is_processing"] for s in slots):
            return slots
        time.sleep(0.1)
    raise AssertionError(f"slots still busy: {[s['id'] for s in slots if s['is_processing']]}")


# -- the fuzz run ---------------------------------------------------------------------------

ODD_NUMBERS = st.sampled_from([-1, 0, 1, -(2**31), 2**31, 2**31 - 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308,
                               0.5, -0.0, 1e-320, 3.7])
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "bogus", "\x00", "\ud7ff\ue000", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦙", "<|im_end|>", "<|im_start|>system",
                     "root ::= [a-z]+", "root ::= root", "NaN", "true", "1", "../../etc/passwd", "x y " * 40]),
    # issue 19: JSON nested in a string field, a huge schema, a deeply nested grammar
    st.sampled_from(["[" * 20_000 + "]" * 20_000, '{"a":' * 5000 + "1" + "}" * 5000,
                     json.dumps({"type": "object", "properties": {f"p{i}": {} for i in range(3000)}}),
                     "root ::= " + "(" * 10_000 + '"a"' + ")" * 10_000]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), ODD_NUMBERS,
                    st.floats(allow_nan=False, allow_infinity=False), ODD_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)), max_leaves=12)

BASE_BODIES: dict[str, Any] = {
    "/lora-adapters": [{"id": 0, "scale": 0.5}],
    "/models/load": {"model": "fuzz"},
    "/models/unload": {"model": "fuzz"},
    "/models": {"model": "fuzz"},
    "/completion": {"prompt": "Hello", "n_predict": 2},
    "/completions": {"prompt": "Hello", "n_predict": 2},
    "/v1/completions": {"prompt": "Hello", "max_tokens": 2},
    "/infill": {"input_prefix": "def f(", "input_suffix": ")", "n_predict": 2},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/chat/completions": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/apply-template": {"messages": [{"role": "user", "content": "Hi"}]},
    "/tokenize": {"content": "Hello world"},
    "/detokenize": {"tokens": [1, 2, 3]},
    "/embedding": {"content": "Hello"},
    "/embeddings": {"content": "Hello"},
    "/v1/embeddings": {"input": "Hello"},
    "/props": {"system_prompt": ""},
    "/slots/{id_slot}": {"filename": "fuzz.bin"},
    "/v1/messages": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/v1/messages/count_tokens": {"messages": [{"role": "user", "content": "Hi"}]},
    "/v1/responses": {"input": "Hi", "max_output_tokens": 2},
    "/responses": {"input": "Hi", "max_output_tokens": 2},
    "/v1/responses/input_tokens": {"input": "Hi"},
    "/responses/input_tokens": {"input": "Hi"},
    "/v1/chat/completions/input_tokens": {"messages": [{"role": "user", "content": "Hi"}]},
    "/v1/chat/completions/control": {"id": "chatcmpl-fuzz", "action": "reasoning_end"},
    "/v1/streams/lookup": {"conversation_ids": ["fuzz"]},
    "/chat/completions/input_tokens": {"messages": [{"role": "user", "content": "Hi"}]},
    **{p: {"query": "Hi", "documents": ["Hello", "Bye"]} for p in ("/rerank", "/v1/rerank", "/reranking", "/v1/reranking")},
}
RAW_BODIES = st.sampled_from([
    b"", b" ", b"null", b"[]", b"[1,2,3]", b'"text"', b"42", b"{", b'{"prompt": "unterminated', b"\xff\xfe\x00",
    b"{\"prompt\": \"hi\"}garbage", b"[" * 5000 + b"]" * 5000, b'{"a":' * 200 + b"1" + b"}" * 200,
    b'{"prompt": ' + b"9" * 5000 + b"}", b'{"prompt": NaN}', b'{"temperature": Infinity, "prompt": "x"}',
    b"prompt=hello&n_predict=2", b"\x1f\x8b\x08\x00garbage", b'{"prompt": "\\ud800"}', b'{"\\u0000": 1}',
    b"x" * 300_000,  # over the server's --max-body-size: 413
]) | st.binary(max_size=200)
CONTENT_TYPES = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=zzz", "application/json; charset=latin-1", "*/*",
                                 "\x7f"])
ODD_HEADERS = st.dictionaries(
    st.sampled_from(["Authorization", "X-Api-Key", "Accept", "Origin", "Accept-Encoding", "X-Forwarded-For",
                     "Cookie", "Range", "Expect", "If-None-Match", "X-Conversation-Id"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60), max_size=3)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
QUERY_VALUES = st.sampled_from(["", "fuzz", "0", "-1", " 12", "99999999999999999999", "conv::org/model", "a" * 300,
                                "\x00", "..", "x y&z=1"]) | st.text(st.characters(blacklist_categories=("Cs",)),
                                                                       max_size=20)
# (method, path, body properties, query parameter names, whether the body is a JSON array)
Route = tuple[str, str, dict[str, Any], list[str], bool]


@st.composite
def fuzz_requests(draw: st.DrawFn, routes: list[Route]) -> dict[str, Any]:
    method, path, props, query_names, array = draw(st.sampled_from(routes))
    route = (method, path)  # what the OpenAPI document lists, before any mutation
    query = ""
    if query_names and draw(st.integers(0, 3)):  # the document's query parameters, odd values
        params = draw(st.dictionaries(st.sampled_from(query_names), QUERY_VALUES, max_size=len(query_names)))
        query = "?" + urlencode(params) if params else ""
    if "{filename}" in path:  # static, wasm and model files: odd names only (never a whole model download)
        path = path.replace("{filename}", draw(st.sampled_from(["index.html", "x.gguf", "missing.js", "a" * 300,
                                                                  "..%2f..%2fetc%2fpasswd", "%00", "%ED%A0%80", "."])))
    if "{id_slot}" in path:
        path = path.replace("{id_slot}", draw(st.sampled_from(["0", "1", "2", "-1", "x", "99999999999999999999",
                                                                "%00", "0x1", "１"])))
        query = "?action=" + draw(st.sampled_from(["save", "restore", "erase", "bogus", ""]))
    elif path in ("/health", "/slots") and draw(st.booleans()):
        query = "?fail_on_no_slot=1&include_slots"
    kind = draw(st.sampled_from(["mutate", "mutate", "random_json", "raw", "method", "path"]))
    if kind == "method":
        method = draw(METHODS)
    elif kind == "path":
        path = draw(st.sampled_from(["/v2/completions", "/completion/", "//completion", "/slots/", "/%2e%2e/etc",
                                     "/v1/models/x", "/static/../../x", "/\u00e9", "/health/../props",
                                     "/" + "a" * 300, "/wasm/" + "b" * 300, "/%ED%A0%80", "/%FF%FE"]))
    headers = draw(ODD_HEADERS)
    ctype = draw(CONTENT_TYPES)
    if ctype is not None:
        headers["Content-Type"] = ctype
    content: bytes | None = None
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if kind == "raw":
            content = draw(RAW_BODIES)
        elif kind == "random_json":
            content = json.dumps(draw(JSON_VALUES)).encode()
        else:
            base = BASE_BODIES.get(path, {})
            body = dict(base[0] if isinstance(base, list) else base)
            names = [*props, "bogus_field", "stream", "model"]
            for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=4)):
                body[name] = draw(JSON_VALUES | ODD_NUMBERS | ODD_TEXT)
            if draw(st.integers(0, 3)) == 0:
                body["stream"] = True
            value: Any = [body] * draw(st.integers(0, 3)) if array else body  # an array body: its items mutated
            content = json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return {"method": method, "url": path + query, "headers": headers, "content": content, "route": route}


def send_all(base: str, requests: list[dict[str, Any]], workers: int = 6) -> list[tuple[dict[str, Any], Any]]:
    def send(req: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        try:
            with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as client:
                t0 = time.monotonic()
                res = client.request(req["method"], req["url"], headers=req["headers"], content=req["content"])
                req["seconds"] = time.monotonic() - t0
                return req, (res.status_code, res.text[:300])
        except httpx.TimeoutException as exc:
            return req, ("timeout", str(exc))
        except (httpx.TransportError, UnicodeEncodeError) as exc:
            return req, ("transport", repr(exc))

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(send, requests))


@pytest.mark.slow
def test_fuzz_requests_never_5xx_or_hang(fuzz_server: ServerProcess) -> None:
    base = fuzz_server.base_url
    doc = httpx.get(base + "/openapi.json").json()
    routes: list[Route] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            array = body.get("type") == "array"
            props = (body.get("items", {}) if array else body).get("properties", {})
            query_names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            routes.append((method.upper(), path, props, query_names, array))
    assert len(routes) >= 20

    generated: list[dict[str, Any]] = []

    @settings(max_examples=N_FUZZ, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz_requests(routes))
    def collect(req: dict[str, Any]) -> None:
        generated.append(req)

    collect()
    assert len(generated) >= N_FUZZ
    # every route of the OpenAPI document is exercised (new routes join the run by themselves)
    sent = {r["route"] for r in generated}
    missing = [(m, p) for m, p, *_ in routes if (m, p) not in sent]
    assert not missing or N_FUZZ < 1000, f"routes the fuzz run never sent: {missing}"
    # RSS baseline after a warm-up tenth of the run: the first grammars, embeddings, slot
    # files and prompt caches allocate once; the check is that the rest does not keep growing.
    warm = max(1, len(generated) // 10)
    results = send_all(base, generated[:warm])
    rss_before = rss_kb(fuzz_server.proc.pid)
    t0 = time.monotonic()
    results += send_all(base, generated[warm:])
    elapsed = time.monotonic() - t0
    statuses = Counter(str(outcome[0]) for _, outcome in results)
    print(f"\nfuzz: {len(results)} requests in {elapsed:.1f} s; statuses {dict(sorted(statuses.items()))}")
    slowest = sorted(results, key=lambda r: -r[0].get("seconds", 0))[:8]
    for req, outcome in slowest:
        print(f"  {req.get('seconds', 0):.2f} s {req['method']} {req['url']} {outcome[0]} {(req['content'] or b'')[:150]!r}")

    def bad(req: dict[str, Any], outcome: Any) -> bool:
        status = outcome[0]
        if status == "transport":
            # an odd header value httpx itself cannot encode is the client's refusal, not the server's
            return "UnicodeEncodeError" not in outcome[1] and "LocalProtocolError" not in outcome[1]
        if status == "timeout":
            return True
        if status == 501:
            return '"not_supported_error"' not in outcome[1]
        if status == 503 and "fail_on_no_slot" in req["url"]:
            # the documented answer when every slot is busy (a HEAD answer has no body to show it)
            return req["method"] != "HEAD" and '"no slot available"' not in outcome[1]
        return bool(status >= 500)

    failures = [(r["method"], r["url"], (r["content"] or b"")[:200], o) for r, o in results if bad(r, o)]
    assert not failures, f"{len(failures)} bad outcomes, first ones: {failures[:5]}"
    for _, outcome in results:
        if isinstance(outcome[0], int) and outcome[0] >= 400 and outcome[1].startswith("{"):
            error = json.loads(outcome[1] if len(outcome[1]) < 300 else "{}").get("error")
            assert error is None or {"code", "message", "type"} <= set(error), outcome
    # still healthy afterwards, and still generating
    assert httpx.get(base + "/health").json()["status"] == "ok"
    httpx.post(base + "/props", json={"system_prompt": ""})  # the fuzz run may have set one
    res = httpx.post(base + "/completion", json={"prompt": "The capital of France is", "n_predict": 3}, timeout=60)
    assert res.status_code == 200 and res.json()["tokens_predicted"] >= 1
    slots_idle(base, timeout=5)
    rss_after = rss_kb(fuzz_server.proc.pid)
    print(f"fuzz: RSS {rss_before // 1024} MiB before, {rss_after // 1024} MiB after")
    assert rss_after <= rss_before * 1.10, (rss_before, rss_after)


# -- disconnects ---------------------------------------------------------------------------

LONG_PROMPT = " ".join(f"item {i} is a {'red' if i % 2 else 'blue'} box;" for i in range(90))


def test_disconnect_mid_prompt_frees_the_slot(busy_server: ServerProcess) -> None:
    """Hang up while the prompt is still being read (no token sent yet, -b 64 reads it in
    chunks): the slot is freed with only part of the prompt in its cache."""
    base = busy_server.base_url
    n_prompt = len(httpx.post(base + "/tokenize", json={"content": LONG_PROMPT}).json()["tokens"])
    assert 500 < n_prompt < 1000
    body = json.dumps({"prompt": LONG_PROMPT, "n_predict": 4, "stream": True, "cache_prompt": False,
                       "id_slot": 2}).encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", busy_server.port)) as sock:
            sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + SLOW
            busy = False
            while time.monotonic() < deadline and not busy:
                busy = httpx.get(base + "/slots", timeout=SLOW).json()[2]["is_processing"]
            sock.setblocking(False)
            try:
                early = sock.recv(1)
            except BlockingIOError:
                early = b""
        if busy and not early:
            break  # hung up while slot 2 was busy with the prompt and nothing had been sent
    else:
        pytest.skip("the prompt finished before the test could hang up (machine too fast)")
    slots = slots_idle(base)
    assert slots[2]["n_cached_tokens"] < n_prompt, slots[2]  # released before the prompt was read


def test_slow_reader_does_not_stall_other_slots(busy_server: ServerProcess) -> None:
    """Clients that never read their streams (tiny receive buffer) hold no slot: the model
    thread never waits for a reader, so the slots go idle and other requests are served."""
    base = busy_server.base_url
    body = json.dumps({"prompt": "Count to a thousand:", "n_probs": 100, "stream": True}).encode()
    readers = []
    try:
        for _ in range(5):  # more unread streams than slots
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", busy_server.port))
            for _ in range(2):  # pipelined: the server answers them one after another, unread
                sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            readers.append(sock)
        request = {"prompt": "Write a poem about the sea.", "n_predict": 4, "cache_prompt": False}
        for _ in range(3):
            res = httpx.post(base + "/completion", json=request, timeout=SLOW)
            assert res.status_code == 200 and res.json()["stop"] is True
        slots_idle(base)  # while every reader is still connected and unread
        assert httpx.get(base + "/health", timeout=SLOW).json()["slots_idle"] == 4
    finally:
        for sock in readers:
            sock.close()
    slots_idle(base)


def test_a_huge_prompt_is_refused_before_tokenizing(busy_server: ServerProcess) -> None:
    """16 MB of prompt text cannot fit 1,024 tokens whatever the tokenization: a 400 at once,
    instead of tokenizing it on the event loop first."""
    text = "hello world " * ((16 << 20) // 12)
    for path, body in (("/completion", {"prompt": text}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": text}]})):
        t0 = time.monotonic()
        res = httpx.post(busy_server.base_url + path, json=body, timeout=SLOW)
        assert res.status_code == 400 and res.json()["error"]["type"] == "exceed_context_size_error", res.text[:300]
        assert "characters" in res.json()["error"]["message"]  # counted in characters: never tokenized
        assert time.monotonic() - t0 < 60
    assert httpx.get(busy_server.base_url + "/health").status_code == 200


# -- load ------------------------------------------------------------------------------------

PROMPTS = ["Tell me a joke.", "What is 2+2?", "Name a color.", "Say hello in French.", "Write one word.",
           "List three fruits.", "What is the capital of Italy?", "Describe the sky."]


async def _client(base: str, idx: int, stop_at: float, stats: dict[str, Any]) -> None:
    rng = random.Random(idx)
    quitter = idx % 3 == 0
    async with httpx.AsyncClient(base_url=base, timeout=SLOW) as client:
        while time.monotonic() < stop_at:
            chat = rng.random() < 0.5
            n = rng.randint(2, 8)
            if chat:
                url, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                                                     "max_tokens": n, "stream": True}
            else:
                url, body = "/completion", {"prompt": rng.choice(PROMPTS), "n_predict": n, "stream": True}
            hang_up_after = rng.randint(0, 3) if quitter else None
            t0 = time.monotonic()
            events: list[Any] = []
            async with client.stream("POST", url, json=body) as res:
                if res.status_code == 503:
                    stats["503"] += 1
                    await asyncio.sleep(float(res.headers.get("Retry-After", "1")))
                    continue
                assert res.status_code == 200, (res.status_code, await res.aread())
                async for line in res.aiter_lines():
                    if not line.startswith("data: "):
                        assert line == "", line
                        continue
                    payload = line[6:]
                    if not events:
                        stats["ttft"].append(time.monotonic() - t0)
                    events.append(payload if payload == "[DONE]" else json.loads(payload))
                    if hang_up_after is not None and len(events) > hang_up_after:
                        break
            if hang_up_after is not None and len(events) > hang_up_after:
                stats["abandoned"] += 1
                continue
            assert events, "empty stream"
            assert all(not (isinstance(e, dict) and "error" in e) for e in events), events[-1]
            if chat:
                assert events[-1] == "[DONE]"
                reasons = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
                assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])
            else:
                assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
                assert events[-1]["tokens_predicted"] <= n
            stats["completed"] += 1


@pytest.mark.slow
def test_load_32_streaming_clients(busy_server: ServerProcess) -> None:
    base = busy_server.base_url
    slots_idle(base)
    stats: dict[str, Any] = {"ttft": [], "completed": 0, "abandoned": 0, "503": 0}
    pid = busy_server.proc.pid

    async def main() -> tuple[int, int]:
        start = time.monotonic()
        stop_at = start + LOAD_SECONDS
        clients = [asyncio.create_task(_client(base, i, stop_at, stats)) for i in range(32)]
        await asyncio.sleep(LOAD_SECONDS / 4)
        rss_first = rss_kb(pid)
        await asyncio.gather(*clients)
        return rss_first, rss_kb(pid)

    t0 = time.monotonic()
    rss_first, rss_end = asyncio.run(main())
    elapsed = time.monotonic() - t0
    slots = slots_idle(base)
    assert len(slots) == 4
    ttft = sorted(stats["ttft"])
    p50, p95 = statistics.median(ttft), ttft[int(0.95 * (len(ttft) - 1))]
    total = stats["completed"] + stats["abandoned"]
    print(f"\nload: {LOAD_SECONDS:.0f} s, 32 clients, -np 4: {total} requests ({stats['completed']} complete, "
          f"{stats['abandoned']} abandoned, {stats['503']} x 503) = {total / elapsed:.2f} req/s; "
          f"TTFT p50 {p50 * 1e3:.0f} ms p95 {p95 * 1e3:.0f} ms; RSS {rss_first / 1024:.1f} -> {rss_end / 1024:.1f} MiB")
    assert stats["completed"] >= 10 and stats["abandoned"] >= 3
    assert abs(rss_end - rss_first) <= 0.10 * rss_first, (rss_first, rss_end)
    assert httpx.get(base + "/health").json()["slots_idle"] == 4
