"""Router mode against a real server: a --models-dir of GGUF files plus a --models-preset INI,
driven with httpx (and the openai package) as llama.cpp's own test_router.py drives
llama-server: list, load, unload, autoload, --models-max 1 eviction, the /models/sse
events, and every error a client can cause.

The two models are SmolLM2 under two names (symlinks); a third file is not a GGUF, so its
load fails; a preset entry names a Hugging Face repository, which pyllama never fetches.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

from asgi import hf_cache
from asgi.presets import convert, parse_ini
from tests.server.conftest import ServerProcess, start


@pytest.fixture(scope="module")
def router(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("router")
    models = folder / "models"
    models.mkdir()
    (models / "smol-a.gguf").symlink_to(smollm2_path)
    (models / "smol-b").mkdir()
    (models / "smol-b" / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(smollm2_path)
    (models / "smol-b" / "mmproj-F16.gguf").write_bytes(b"companion, never a model of its own")
    (models / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    preset = folder / "models.ini"
    preset.write_text("version = 1\n[*]\nc = 512\n\n[smol-a]\nalias = first, a ; comment\ntags = small\nstop-timeout = 1\n\n"
                      "[hub]\nhf-repo = ggml-org/some-model-GGUF\n")
    yield from start(["--models-dir", str(models), "--models-preset", str(preset), "--models-max", "1",
                      "-np", "1"], "router", no_cache(folder))


def no_cache(folder: Path) -> dict[str, str]:
    """An empty llama-server download cache: the machine's own (~/.cache/huggingface/hub)
    would add its models to every listing."""
    (folder / "empty-cache").mkdir(exist_ok=True)
    return {"LLAMA_CACHE": str(folder / "empty-cache")}


def models(server: ServerProcess) -> dict[str, dict[str, Any]]:
    res = httpx.get(server.base_url + "/v1/models", timeout=30)
    assert res.status_code == 200
    return {m["id"]: m for m in res.json()["data"]}


def wait_status(server: ServerProcess, name: str, wanted: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = models(server)[name]
        if entry["status"]["value"] == wanted:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"{name} never reached {wanted}: {models(server)[name]['status']}")


class Events:
    """/models/sse read in a thread with httpx streaming, as a web UI would keep it open."""

    def __init__(self, server: ServerProcess) -> None:
        self.items: list[dict[str, Any]] = []
        self.open = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server.base_url,), daemon=True)
        self._thread.start()
        assert self.open.wait(30)

    def _run(self, base: str) -> None:
        try:
            with httpx.stream("GET", base + "/models/sse", timeout=None) as res:
                assert res.headers["content-type"].startswith("text/event-stream")
                self.open.set()
                for line in res.iter_lines():
                    if line.startswith("data: "):
                        self.items.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass

    def wait_for(self, event: str, model: str, timeout: float = 60, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.items:
                if item["event"] == event and item["model"] == model and all(
                        item.get("data", {}).get(k) == v for k, v in data.items()):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"no {event} {data} for {model}: {self.items}")


def test_preset_file_reads_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    ini = tmp_path / "p.ini"
    ini.write_text("top = 1\n# comment\n[ org/repo:q8_0 ]\nctx-size = 256 ; why\nno-context-shift = true\n"
                   "LLAMA_ARG_N_PARALLEL = 3\n[*]\nc=128\n")
    sections = parse_ini(str(ini))
    assert sections == {"default": {"top": "1"}, "org/repo:Q8_0": {"ctx-size": "256", "no-context-shift": "true",
                                                                   "LLAMA_ARG_N_PARALLEL": "3"}, "*": {"c": "128"}}
    values, extra = convert("org/repo:Q8_0", {**sections["org/repo:Q8_0"], "load-on-startup": "1"})
    assert values == {"ctx_size": 256, "context_shift": False, "parallel": 3}
    assert extra == {"load-on-startup": "1"}


def test_lists_every_model_unloaded_with_llama_server_fields(router: ServerProcess) -> None:
    listed = models(router)
    assert list(listed) == ["broken", "hub", "smol-a", "smol-b"]  # sorted; mmproj is a companion file
    a = listed["smol-a"]
    assert a["status"]["value"] == "unloaded" and a["aliases"] == ["a", "first"] and a["tags"] == ["small"]
    assert a["source"] == "preset" and listed["smol-b"]["source"] == "models_dir" and a["can_remove"] is False
    assert a["status"]["args"][:2] == ["pyllama-server", "--model"] and "--ctx-size" in a["status"]["args"]
    assert "[smol-a]" in a["status"]["preset"] and "ctx-size = 512" in a["status"]["preset"]
    assert listed["smol-b"]["status"]["preset"].startswith("[smol-b]\nctx-size = 512\nmodel = ")  # every source
    assert a["object"] == "model" and a["owned_by"] == "llamacpp"
    assert a["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}
    props = httpx.get(router.base_url + "/props").json()
    assert props["role"] == "router" and props["max_instances"] == 1 and props["models_autoload"] is True


def test_load_autoload_lru_unload_and_events(router: ServerProcess) -> None:
    events = Events(router)
    base = router.base_url
    assert httpx.post(base + "/models/load", json={"model": "first"}).json() == {"success": True}  # an alias
    entry = wait_status(router, "smol-a", "loaded")
    assert entry["meta"]["n_vocab"] == 49152 and entry["meta"]["n_ctx"] == 512
    again = httpx.post(base + "/models/load", json={"model": "smol-a"})
    assert again.status_code == 400 and again.json()["error"]["message"] == "model is already running"
    events.wait_for("model_status", "smol-a", status="loading")
    loaded = events.wait_for("status_change", "smol-a", status="loaded")
    assert loaded["data"]["info"]["meta"]["n_vocab"] == 49152

    # A request for the other model loads it on the spot; --models-max 1 unloads smol-a first.
    client = OpenAI(api_key="x", base_url=base + "/v1")
    reply = client.chat.completions.create(model="smol-b", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=3)
    assert reply.model == "smol-b" and reply.choices[0].message.content
    states = {name: m["status"]["value"] for name, m in models(router).items()}
    assert states == {"broken": "unloaded", "hub": "unloaded", "smol-a": "unloaded", "smol-b": "loaded"}
    events.wait_for("status_change", "smol-a", status="unloaded", exit_code=0)

    assert httpx.post(base + "/models/unload", json={"model": "smol-b"}).json() == {"success": True}
    wait_status(router, "smol-b", "unloaded")
    events.wait_for("status_change", "smol-b", status="unloaded", exit_code=0)
    twice = httpx.post(base + "/models/unload", json={"model": "smol-b"})
    assert twice.status_code == 400 and twice.json()["error"]["message"] == "model is not running"


def test_a_failed_load_is_reported_to_the_requester_and_in_the_list(router: ServerProcess) -> None:
    events = Events(router)
    res = httpx.post(router.base_url + "/completion", json={"model": "broken", "prompt": "x"}, timeout=120)
    assert res.status_code == 503 and "failed to load" in res.json()["error"]["message"]
    assert httpx.get(router.base_url + "/health").json() == {"status": "ok"}  # as llama-server's router
    status = models(router)["broken"]["status"]
    assert status["value"] == "unloaded" and status["failed"] is True and status["exit_code"] == 1
    events.wait_for("status_change", "broken", status="unloaded", exit_code=1)
    hub = httpx.post(router.base_url + "/tokenize", json={"model": "hub", "content": "x"}, timeout=120)
    assert hub.status_code == 503 and "does not download" in hub.json()["error"]["message"]


def test_request_errors_match_llama_server(router: ServerProcess) -> None:
    base = router.base_url
    with pytest.raises(BadRequestError) as info:
        OpenAI(api_key="x", base_url=base + "/v1").chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    assert "model 'gpt-4' not found" in str(info.value)
    missing = httpx.post(base + "/tokenize", json={"content": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "model name is missing from the request"
    not_found = httpx.post(base + "/models/load", json={"model": "nope"})
    assert not_found.status_code == 404 and not_found.json()["error"]["type"] == "not_found_error"
    assert httpx.post(base + "/models/unload", json={"model": "nope"}).status_code == 400
    assert httpx.post(base + "/models/load", content=b"{not json").status_code == 400
    download = httpx.post(base + "/models", json={"model": "org/x"})  # pyllama never downloads
    assert download.status_code == 400 and "unable to download" in download.json()["error"]["message"]
    assert httpx.post(base + "/models", json={}).status_code == 400
    assert httpx.request("DELETE", base + "/models?model=smol-a").status_code == 400  # not from a cache
    assert httpx.request("DELETE", base + "/models?model=nope").status_code == 404
    for path in ("/models/load", "/models/unload", "/models"):  # malformed bodies: a 4xx, never a 5xx
        for body in (b"[]", b'"x"', b"1", b"null", b'{"model": 7}', b'{"model": ["a"]}', b'{"model": null}',
                     b'{"model": "' + b"x" * 100_000 + b'"}', b"\xff\xfe", b""):
            res = httpx.post(base + path, content=body, headers={"Content-Type": "application/json"})
            assert 400 <= res.status_code < 500, (path, body[:40], res.status_code, res.text[:200])
    for query in ("?reload=1&x=%ff", "?autoload=maybe"):
        assert httpx.get(base + "/models" + query).status_code == 200
    # /metrics is routed first (400s), then the model's own answer: 501 without --metrics
    assert httpx.get(base + "/metrics").json()["error"]["message"] == "model name is missing from the request"
    assert httpx.get(base + "/metrics?model=nope").status_code == 400
    assert httpx.get(base + "/metrics?model=smol-a", timeout=120).status_code == 501


def test_a_busy_model_is_not_evicted_and_the_waiting_request_is_served(router: ServerProcess) -> None:
    base = router.base_url
    httpx.post(base + "/models/load", json={"model": "smol-a"})
    wait_status(router, "smol-a", "loaded")
    finished: dict[str, float] = {}

    def generate() -> None:
        res = httpx.post(base + "/completion", timeout=300, json={
            "model": "smol-a", "prompt": "Once upon a time", "n_predict": 48, "ignore_eos": True})
        assert res.status_code == 200 and res.json()["tokens_predicted"] == 48
        finished["a"] = time.monotonic()

    busy = threading.Thread(target=generate)
    busy.start()
    time.sleep(1.0)
    other = httpx.post(base + "/tokenize", json={"model": "smol-b", "content": "hello"}, timeout=300)
    finished["b"] = time.monotonic()
    busy.join(300)
    assert other.status_code == 200 and other.json()["tokens"]
    assert finished["a"] < finished["b"]  # smol-b waited for smol-a's generation to end
    states = {name: m["status"]["value"] for name, m in models(router).items()}
    assert states["smol-a"] == "unloaded" and states["smol-b"] == "loaded"


def test_no_autoload_and_reload(smollm2_path: Path, tmp_path: Path) -> None:
    preset = tmp_path / "models.ini"
    preset.write_text(f"[one]\nmodel = {smollm2_path}\nc = 256\n\n[two]\nmodel = {smollm2_path}\n")
    running = start(["--models-preset", str(preset), "--no-models-autoload"], "router-noauto", no_cache(tmp_path))
    server = next(running)
    try:
        base = server.base_url
        body = {"model": "one", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        refused = httpx.post(base + "/v1/chat/completions", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["message"] == "model is not loaded"
        forced = httpx.post(base + "/v1/chat/completions?autoload=true", json=body, timeout=120)
        assert forced.status_code == 200
        preset.write_text(f"[two]\nmodel = {smollm2_path}\n\n[three]\nmodel = {smollm2_path}\n")
        assert list(models(server)) == ["one", "two"]  # read again only when asked
        listed = httpx.get(base + "/models?reload=1").json()["data"]
        assert [m["id"] for m in listed] == ["three", "two"]  # "one" was running: unloaded, then dropped
    finally:
        running.close()


def test_unloading_under_a_stream_ends_it_with_an_error_event(router: ServerProcess) -> None:
    base = router.base_url
    httpx.post(base + "/models/load", json={"model": "smol-a"})
    wait_status(router, "smol-a", "loaded")
    body = {"model": "smol-a", "prompt": "Once upon a time", "n_predict": 2000, "ignore_eos": True, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", base + "/completion", json=body, timeout=120) as res:
        assert res.status_code == 200
        for line in res.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
            if len(lines) == 3:  # generating: now unload it (stop-timeout = 1 s in the preset)
                assert httpx.post(base + "/models/unload", json={"model": "smol-a"}).json() == {"success": True}
    last = json.loads(lines[-1][6:])
    assert "error" in last and "unloaded" in last["error"]["message"], last
    assert len(lines) < 200
    wait_status(router, "smol-a", "unloaded")


def test_concurrent_requests_for_two_models_with_one_slot_all_succeed(router: ServerProcess) -> None:
    """Six clients at once, three per model, --models-max 1: the queue serves one model's
    requests together (one load each), then the other's; nobody gets an error or hangs."""
    base = router.base_url
    results: list[tuple[str, int]] = []

    def ask(model: str) -> None:
        res = httpx.post(base + "/completion", timeout=300,
                         json={"model": model, "prompt": "Hello", "n_predict": 4})
        results.append((model, res.status_code))

    threads = [threading.Thread(target=ask, args=(m,)) for m in ("smol-a", "smol-b") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(results) == [("smol-a", 200)] * 3 + [("smol-b", 200)] * 3
    loaded = [name for name, m in models(router).items() if m["status"]["value"] == "loaded"]
    assert len(loaded) == 1


def test_each_model_sleeps_on_its_own_and_wakes_on_a_request(smollm2_path: Path, tmp_path: Path) -> None:
    preset = tmp_path / "models.ini"
    preset.write_text(f"[one]\nmodel = {smollm2_path}\nc = 256\n")
    running = start(["--models-preset", str(preset), "--sleep-idle-seconds", "1", "--metrics"], "router-sleep",
                    no_cache(tmp_path))
    server = next(running)
    try:
        events = Events(server)
        body = {"model": "one", "prompt": "Hi", "n_predict": 2, "ignore_eos": True}
        assert httpx.post(server.base_url + "/completion", json=body, timeout=120).status_code == 200
        assert wait_status(server, "one", "sleeping", timeout=30)["status"]["value"] == "sleeping"
        events.wait_for("status_change", "one", status="sleeping")
        # /props and /metrics of a sleeping model answer from what it kept, without waking it
        # (llama-server's router proxies them to the sleeping child, which does the same)
        props = httpx.get(server.base_url + "/props?model=one", timeout=60).json()
        assert props["is_sleeping"] is True and props["model_alias"] == "one"
        assert metric(httpx.get(server.base_url + "/metrics?model=one", timeout=60).text, "tokens_predicted_total") == 2
        assert models(server)["one"]["status"]["value"] == "sleeping"
        assert httpx.post(server.base_url + "/completion", json=body, timeout=120).status_code == 200
        kinds = [(e["event"], e.get("data", {}).get("status")) for e in events.items if e["model"] == "one"]
        asleep = kinds.index(("status_change", "sleeping"))
        assert ("status_change", "loaded") in kinds[asleep:], kinds  # woken up by the request
    finally:
        running.close()


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(f"llamacpp:{name} "))
    return float(line.split()[1])


# Models as llama-server's download cache holds them (LLAMA_CACHE, the hub's layout).
GEMMA_ID, SMOL_ID = "ggml-org/tinygemma3-GGUF:Q8_0", "org/smol-GGUF:Q4_1"


def hub_entry(cache: Path, repo: str, filename: str, target: Path) -> Path:
    """`repo`'s `filename` in a hub-layout cache: a snapshot link to a blob (a link to `target`)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = "ab" * 20
    blob = folder / "blobs" / f"{abs(hash((repo, filename))):x}"
    entry = folder / "snapshots" / commit / filename
    blob.parent.mkdir(parents=True, exist_ok=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    blob.symlink_to(target)
    entry.symlink_to(Path("../../blobs") / blob.name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return entry


@pytest.fixture(scope="module")
def cached(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("cached")
    cache = folder / "hub"
    hub_entry(cache, "ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf", smollm2_path)
    hub_entry(cache, "org/smol-GGUF", "smol-Q4_1.gguf", smollm2_path)
    hub_entry(cache, "org/smol-GGUF", "mmproj-smol-F16.gguf", smollm2_path)  # a companion, not a model
    hub_entry(cache, "org/dup-GGUF", "dup-Q4_1.gguf", smollm2_path)
    preset = folder / "models.ini"
    preset.write_text("[served-dup]\nhf-repo = org/dup-GGUF\ndedup-cache-models = 1\n\n"
                      "[not-cached]\nhf-repo = org/elsewhere-GGUF:Q8_0\n")
    yield from start(["--models-preset", str(preset), "--models-max", "2", "-np", "1", "-c", "512", "--metrics"],
                     "router-cache", {"LLAMA_CACHE": str(cache)})


def test_llama_servers_download_cache_is_a_model_source(cached: ServerProcess) -> None:
    listed = models(cached)
    assert list(listed) == [GEMMA_ID, "not-cached", SMOL_ID, "served-dup"]  # org/dup-GGUF:Q4_1 is hidden
    for name in (GEMMA_ID, SMOL_ID):
        assert listed[name]["source"] == "cache" and listed[name]["can_remove"] is True
        assert listed[name]["aliases"] == [] and listed[name]["status"]["value"] == "unloaded"
        assert listed[name]["status"]["preset"] == f"[{name}]\nctx-size = 512\nparallel = 1\nhf-repo = {name}\n\n"
    assert listed["served-dup"]["source"] == "preset" and listed["served-dup"]["can_remove"] is False
    base = cached.base_url
    # the hidden cache entry is still served by name, and is the file the preset loads
    hidden = httpx.post(base + "/tokenize", json={"model": "org/dup-GGUF:Q4_1", "content": "hello world"}, timeout=120)
    preset = httpx.post(base + "/tokenize", json={"model": "served-dup", "content": "hello world"}, timeout=120)
    assert hidden.status_code == preset.status_code == 200 and hidden.json() == preset.json()
    assert "org/dup-GGUF:Q4_1" not in models(cached)
    props = httpx.get(base + "/props", params={"model": "served-dup"}, timeout=60).json()
    assert props["model_path"].endswith("/snapshots/" + "ab" * 20 + "/dup-Q4_1.gguf")
    # a preset naming a repository that is not in the cache: listed, fails to load with the reason
    missing = httpx.post(base + "/tokenize", json={"model": "not-cached", "content": "x"}, timeout=120)
    assert missing.status_code == 503 and "download cache" in missing.json()["error"]["message"]
    exists = httpx.post(base + "/models", json={"model": GEMMA_ID})
    assert exists.status_code == 400 and exists.json()["error"]["message"] == f"model '{GEMMA_ID}' already exists"


def test_props_and_metrics_are_routed_by_model(cached: ServerProcess) -> None:
    base = cached.base_url
    for name in list(models(cached)):
        if models(cached)[name]["status"]["value"] == "loaded":
            httpx.post(base + "/models/unload", json={"model": name})
            wait_status(cached, name, "unloaded")
    missing = httpx.get(base + "/metrics")  # llama-server's router: /metrics belongs to a model
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "model name is missing from the request"
    assert "not found" in httpx.get(base + "/metrics?model=nope").json()["error"]["message"]
    for path in ("/props", "/metrics"):
        off = httpx.get(base + path, params={"model": GEMMA_ID, "autoload": "false"})
        assert off.status_code == 400 and off.json()["error"]["message"] == "model is not loaded"
    props = httpx.get(base + "/props", params={"model": GEMMA_ID}, timeout=120)  # autoload: loads it
    assert props.status_code == 200 and props.json()["model_alias"] == GEMMA_ID
    assert models(cached)[GEMMA_ID]["status"]["value"] == "loaded"
    res = httpx.post(base + "/completion", json={"model": GEMMA_ID, "prompt": "Hi", "n_predict": 3, "ignore_eos": True},
                     timeout=120)
    assert res.status_code == 200
    gemma = httpx.get(base + "/metrics", params={"model": GEMMA_ID}, timeout=60)
    assert gemma.headers["content-type"].startswith("text/plain") and metric(gemma.text, "tokens_predicted_total") == 3
    smol = httpx.get(base + "/metrics", params={"model": SMOL_ID}, timeout=120).text  # loads it: its own counters
    assert metric(smol, "tokens_predicted_total") == 0 and models(cached)[SMOL_ID]["status"]["value"] == "loaded"


CHAT = {"messages": [{"role": "user", "content": "Hi"}]}
# Every route llama-server's router proxies by the body's "model" (server.cpp, is_router_server)
ROUTED_POSTS: list[tuple[str, dict[str, Any]]] = [
    ("/completion", {"prompt": "Hi", "n_predict": 1}), ("/completions", {"prompt": "Hi", "n_predict": 1}),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 1}), ("/chat/completions", {**CHAT, "max_tokens": 1}),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 1}), ("/v1/responses", {"input": "Hi", "max_output_tokens": 1}),
    ("/responses", {"input": "Hi", "max_output_tokens": 1}), ("/v1/messages", {**CHAT, "max_tokens": 1}),
    ("/v1/messages/count_tokens", CHAT), ("/v1/chat/completions/input_tokens", CHAT),
    ("/chat/completions/input_tokens", CHAT), ("/v1/responses/input_tokens", {"input": "Hi"}),
    ("/responses/input_tokens", {"input": "Hi"}), ("/infill", {"input_prefix": "def f(", "input_suffix": ")"}),
    ("/embedding", {"content": "Hi"}), ("/embeddings", {"content": "Hi"}), ("/v1/embeddings", {"input": "Hi"}),
    ("/rerank", {"query": "a", "documents": ["b"]}), ("/reranking", {"query": "a", "documents": ["b"]}),
    ("/v1/rerank", {"query": "a", "documents": ["b"]}), ("/v1/reranking", {"query": "a", "documents": ["b"]}),
    ("/tokenize", {"content": "Hi"}), ("/detokenize", {"tokens": [1]}), ("/apply-template", CHAT),
    ("/props", {}), ("/slots/0?action=erase", {}),
]
ROUTED_GETS = ["/props", "/metrics", "/slots", "/lora-adapters"]  # by ?model=
ROUTING_ERRORS = ("model name is missing from the request", "model is not loaded", "not found")


def test_every_route_llama_servers_router_proxies_is_routed_by_model(cached: ServerProcess) -> None:
    """Each route: no model -> 400 "model name is missing"; an unknown one -> 400 "not found";
    an unloaded one with ?autoload=false -> 400 "model is not loaded" (so the route asked the
    router for that very model); the loaded one -> the model's own answer (200, or 501 for an
    endpoint this model was not started for), never a routing error."""
    base = cached.base_url
    httpx.post(base + "/models/unload", json={"model": SMOL_ID})
    httpx.post(base + "/models/load", json={"model": GEMMA_ID})
    wait_status(cached, GEMMA_ID, "loaded")
    wait_status(cached, SMOL_ID, "unloaded")
    requests: list[tuple[str, str, dict[str, Any] | None]] = [("POST", p, b) for p, b in ROUTED_POSTS]
    requests += [("GET", p, None) for p in ROUTED_GETS]
    for method, path, body in requests:
        def call(model: str | None, autoload: bool = True, method: str = method, path: str = path,
                 body: dict[str, Any] | None = body) -> httpx.Response:
            url, _, query = (base + path).partition("?")
            params = dict(httpx.QueryParams(query)) | ({} if autoload else {"autoload": "false"})
            if method == "GET":
                return httpx.get(url, params=params | ({"model": model} if model else {}), timeout=120)
            return httpx.post(url, params=params, json={**(body or {}), **({"model": model} if model else {})},
                              timeout=120)

        if path != "/props" or method == "POST":  # GET /props without a model: the router's own
            none = call(None)
            assert none.status_code == 400, (method, path, none.text)
            assert none.json()["error"]["message"] == "model name is missing from the request", (method, path)
        unknown = call("nope")
        assert unknown.status_code == 400 and "not found" in unknown.json()["error"]["message"], (method, path)
        asleep = call(SMOL_ID, autoload=False)
        assert asleep.status_code == 400, (method, path, asleep.text)
        assert asleep.json()["error"]["message"] == "model is not loaded", (method, path)
        served = call(GEMMA_ID)
        assert served.status_code in (200, 501), (method, path, served.status_code, served.text[:200])
        if served.status_code != 200:
            assert not any(e in served.json()["error"]["message"] for e in ROUTING_ERRORS), (method, path)
    assert models(cached)[SMOL_ID]["status"]["value"] == "unloaded"  # nothing above loaded it


def test_delete_removes_a_cached_model_as_llama_server_does(cached: ServerProcess) -> None:
    base = cached.base_url
    events = Events(cached)
    httpx.post(base + "/models/load", json={"model": SMOL_ID})
    wait_status(cached, SMOL_ID, "loaded")
    assert httpx.request("DELETE", base + "/models?model=served-dup").status_code == 400  # a preset's
    res = httpx.request("DELETE", base + "/models", params={"model": SMOL_ID}, timeout=120)
    assert res.status_code == 200 and res.json() == {"success": True}
    assert SMOL_ID not in models(cached)
    events.wait_for("status_change", SMOL_ID, status="unloaded")
    assert events.wait_for("model_remove", SMOL_ID)["data"] == {}
    gone = httpx.post(base + "/tokenize", json={"model": SMOL_ID, "content": "x"})
    assert gone.status_code == 400 and "not found" in gone.json()["error"]["message"]
    assert httpx.request("DELETE", base + "/models", params={"model": SMOL_ID}).status_code == 404
    listed = httpx.get(base + "/models?reload=1").json()["data"]  # the files are gone, not just the entry
    assert SMOL_ID not in {m["id"] for m in listed} and GEMMA_ID in {m["id"] for m in listed}


def test_cache_is_read_as_llama_cpp_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.gguf"
    target.write_bytes(b"GGUF")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("LLAMA_CACHE", str(cache))  # the first of llama-server's variables wins
    assert hf_cache.cache_directory() == cache
    monkeypatch.delenv("LLAMA_CACHE")
    assert hf_cache.cache_directory() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("LLAMA_CACHE", str(cache))
    for name in ("big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf", "big-Q4_K_M.gguf",
                 "mmproj-big-F16.gguf", "mtp-big-Q8_0.gguf", "notag.gguf", "README.md"):
        hub_entry(cache, "org/big-GGUF", name, target)
    hub_entry(cache, "org/other", "other.q5_k.gguf", target)
    (cache / "models--not-a-repo" / "snapshots").mkdir(parents=True)
    assert hf_cache.list_cached_models() == ["org/big-GGUF:Q4_K_M", "org/big-GGUF:Q8_0", "org/other:Q5_K"]
    assert hf_cache.resolve("org/big-GGUF").name == "big-Q4_K_M.gguf"  # type: ignore[union-attr]
    assert hf_cache.resolve("org/big-GGUF:q8_0").name == "big-Q8_0-00001-of-00002.gguf"  # type: ignore[union-attr]
    assert hf_cache.resolve("org/big-GGUF", "notag.gguf").name == "notag.gguf"  # type: ignore[union-attr]
    assert hf_cache.resolve("org/big-GGUF:IQ2_XXS") is None and hf_cache.resolve("no-slash") is None
    assert hf_cache.remove("org/big-GGUF:Q8_0") is True
    assert hf_cache.list_cached_models() == ["org/big-GGUF:Q4_K_M", "org/other:Q5_K"]
    blobs = cache / "models--org--big-GGUF" / "blobs"
    # the tag's files went (both shards and the mtp- sidecar of that tag); the linked model stays
    assert len(list(blobs.iterdir())) == 4 and target.exists()
    assert hf_cache.remove("org/other") is True and hf_cache.list_cached_models() == ["org/big-GGUF:Q4_K_M"]
    assert hf_cache.valid_repo_id("a.b/c-d_e") and not hf_cache.valid_repo_id("a//b") and not hf_cache.valid_repo_id("a/b/c")


def test_hf_flag_serves_a_cached_model_or_a_cached_preset(smollm2_path: Path, tmp_path: Path) -> None:
    """-hf REPO[:TAG] offline, as llama-server: the cached file, named by the flag's value; a
    repository holding a preset.ini starts a router on that preset; anything else exits 1."""
    cache = tmp_path / "hub"
    hub_entry(cache, "org/smol-GGUF", "smol-Q4_1.gguf", smollm2_path)
    preset = tmp_path / "preset.ini"
    preset.write_text("[smol-preset]\nhf-repo = org/smol-GGUF:Q4_1\n")
    hub_entry(cache, "org/preset-ci", "preset.ini", preset)
    env = {"LLAMA_CACHE": str(cache)}
    single = start(["-hf", "org/smol-GGUF:q4_1", "-c", "256"], "router-hf", env)
    server = next(single)
    try:
        assert list(models(server)) == ["org/smol-GGUF:q4_1"]
        assert httpx.post(server.base_url + "/tokenize", json={"content": "hi"}).json()["tokens"]
    finally:
        single.close()
    routed = start(["-hf", "org/preset-ci"], "router-hf-preset", env)
    server = next(routed)
    try:
        listed = models(server)
        assert list(listed) == ["org/smol-GGUF:Q4_1", "smol-preset"] and listed["smol-preset"]["source"] == "preset"
    finally:
        routed.close()
    import subprocess
    import sys

    missing = subprocess.run([sys.executable, "-m", "asgi.main", "-hf", "org/absent-GGUF"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **env})
    assert missing.returncode == 1 and "not in llama-server's download cache" in missing.stderr
