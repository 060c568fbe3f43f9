"""Router mode against a real server: a --models-dir of GGUF files plus a --models-preset INI,
driven with httpx (and the openai package) as llama.cpp's own test_router.py drives
llama-server: list, load, unload, autoload, --models-max 1 eviction, the /models/sse
events, and every error a client can cause.

The two models are SmolLM2 under two names (symlinks); a third file is not a GGUF, so its
load fails; a preset entry names a Hugging Face repository, which pyllama never fetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

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
                      "-np", "1"], "router")


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
    running = start(["--models-preset", str(preset), "--no-models-autoload"], "router-noauto")
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
    running = start(["--models-preset", str(preset), "--sleep-idle-seconds", "1"], "router-sleep")
    server = next(running)
    try:
        events = Events(server)
        body = {"model": "one", "prompt": "Hi", "n_predict": 2}
        assert httpx.post(server.base_url + "/completion", json=body, timeout=120).status_code == 200
        assert wait_status(server, "one", "sleeping", timeout=30)["status"]["value"] == "sleeping"
        events.wait_for("status_change", "one", status="sleeping")
        assert httpx.post(server.base_url + "/completion", json=body, timeout=120).status_code == 200
        kinds = [(e["event"], e.get("data", {}).get("status")) for e in events.items if e["model"] == "one"]
        asleep = kinds.index(("status_change", "sleeping"))
        assert ("status_change", "loaded") in kinds[asleep:], kinds  # woken up by the request
    finally:
        running.close()
