"""LoRA on a real server: --lora/--lora-scaled/--lora-init-without-apply, GET/POST
/lora-adapters and the per-request `lora` field, with a synthetic adapter whose effect is
known exactly (tests/models/lora_synth.py): a request's tokens must equal those the engine
generates alone with the base model (scale 0) or with the adapter merged in (scale 1).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from asgi.lora_settings import lora_files
from asgi.settings import SettingsError
from pyllama.engine import Model
from pyllama.sampling import SamplingParams
from pyllama.scheduler import Scheduler
from pyllama.tasks import Task
from tests.models import synth
from tests.models.lora_synth import LoraFiles, write_lora
from tests.models.test_lora import run
from tests.server.conftest import REPO, ServerProcess, free_port, start

PROMPT = list(synth.PROMPT[:8])
N_PREDICT = 6
SPEC = ["--cache-type-k", "f32", "--cache-type-v", "f32", "--weights", "dense", "-c", "256", "-np", "4"]


def alone(path: Path) -> list[int]:
    model = Model.load(path, weights="dense", n_ctx=64, cache_type_k="f32", cache_type_v="f32")
    task = Task(prompt=PROMPT, params=SamplingParams(temperature=0.0), n_predict=N_PREDICT)
    return run(Scheduler(model), [task])[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> LoraFiles:
    return write_lora("llama", tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def expected(files: LoraFiles) -> dict[str, list[int]]:
    out = {"base": alone(files.base), "merged": alone(files.merged)}
    assert out["base"] != out["merged"]
    return out


@pytest.fixture(scope="module")
def server(files: LoraFiles) -> Iterator[ServerProcess]:
    yield from start(["-m", str(files.base), "--lora", str(files.adapter), *SPEC], "lora")


def complete(server: ServerProcess, **fields: Any) -> httpx.Response:
    body = {"prompt": PROMPT, "n_predict": N_PREDICT, "temperature": 0, "return_tokens": True, **fields}
    return httpx.post(server.base_url + "/completion", json=body, timeout=120)


def tokens(server: ServerProcess, **fields: Any) -> list[int]:
    res = complete(server, **fields)
    assert res.status_code == 200, res.text
    out: list[int] = res.json()["tokens"]
    return out


def test_list_and_per_request_scales(server: ServerProcess, files: LoraFiles, expected: dict[str, list[int]]) -> None:
    listed = httpx.get(server.base_url + "/lora-adapters").json()
    assert listed == [{"id": 0, "path": str(files.adapter), "scale": 1.0, "task_name": "test-task",
                       "prompt_prefix": ""}]
    assert tokens(server) == expected["merged"]  # the server-wide scale 1
    assert tokens(server, lora=[{"id": 0, "scale": 0.0}]) == expected["base"]
    assert tokens(server, lora=[]) == expected["merged"]  # an empty list: the server's scales
    assert tokens(server, lora=[{"id": 0, "scale": 1}]) == expected["merged"]
    res = complete(server, lora=[{"id": 0, "scale": 0.5}])
    assert res.json()["generation_settings"]["lora"] == [{"id": 0, "scale": 0.5}]


def test_slots_show_each_tasks_lora(server: ServerProcess) -> None:
    """/slots `params.lora` (task_params::to_json): the request's own list, by id, the last
    scale given for an id winning; [] without the field; an idle slot shows its last task's."""
    assert complete(server, id_slot=1, lora=[{"id": 0, "scale": 0.25}, {"id": 0, "scale": 0.5}]).status_code == 200
    assert complete(server, id_slot=2).status_code == 200
    slots = httpx.get(server.base_url + "/slots").json()
    assert slots[1]["params"]["lora"] == [{"id": 0, "scale": 0.5}]
    assert slots[2]["params"]["lora"] == []
    assert slots[1]["params"]["n_predict"] == N_PREDICT and "n_ctx" not in slots[1]["params"]
    assert "grammar" not in slots[1]["params"]  # llama-server's only_metrics form
    s1 = slots[1]
    assert s1["n_prompt_tokens_processed"] + s1["n_prompt_tokens_cache"] == len(PROMPT)
    assert s1["n_prompt_tokens"] >= len(PROMPT)


def test_parallel_requests_with_different_scales(server: ServerProcess, expected: dict[str, list[int]]) -> None:
    scales = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda s: tokens(server, lora=[{"id": 0, "scale": s}], cache_prompt=False), scales))
    assert got == [expected["merged" if s else "base"] for s in scales]


def test_post_sets_the_server_wide_scales(server: ServerProcess, expected: dict[str, list[int]]) -> None:
    url = server.base_url + "/lora-adapters"
    try:
        assert httpx.post(url, json=[]).json() == {"success": True}  # adapters left out: scale 0
        assert httpx.get(url).json()[0]["scale"] == 0.0
        assert tokens(server) == expected["base"]
        assert tokens(server, lora=[{"id": 0, "scale": 1.0}]) == expected["merged"]
        assert httpx.post(url, json=[{"id": 0, "scale": 1.0}]).status_code == 200
        assert tokens(server) == expected["merged"]
    finally:
        httpx.post(url, json=[{"id": 0, "scale": 1.0}])


def test_chat_routes_take_the_field(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none")
    messages: Any = [{"role": "user", "content": "w5 w17 w9"}]

    def chat(lora: list[dict[str, Any]] | None) -> str | None:
        extra = {"lora": lora} if lora is not None else {}
        res = client.chat.completions.create(model="x", messages=messages, max_tokens=N_PREDICT, temperature=0,
                                             extra_body=extra)
        return res.choices[0].message.content

    assert chat(None) == chat([{"id": 0, "scale": 1.0}])
    assert chat([{"id": 0, "scale": 0.0}]) != chat([{"id": 0, "scale": 1.0}])
    with pytest.raises(openai.BadRequestError):
        chat([{"id": 1, "scale": 1.0}])


@pytest.mark.parametrize("lora", ["x", {"id": 0}, [1], [{"id": 1, "scale": 1}], [{"id": "0", "scale": 1}],
                                  [{"id": -1}], [{"id": True}], [{"id": 0, "scale": "big"}], [{"scale": 1}]])
def test_bad_lora_field_is_a_400(server: ServerProcess, lora: Any) -> None:
    for path, body in (("/completion", {"prompt": "w5", "n_predict": 1}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "w5"}], "max_tokens": 1})):
        res = httpx.post(server.base_url + path, json={**body, "lora": lora}, timeout=60)
        assert res.status_code == 400, (path, lora, res.text)
        assert set(res.json()["error"]) >= {"code", "message", "type"}


@pytest.mark.parametrize("body", [{"id": 0, "scale": 1}, "[", [{"id": 1, "scale": 1}], [{"id": 0, "scale": None}],
                                  [7], None])
def test_bad_post_is_a_400(server: ServerProcess, body: Any) -> None:
    content = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    res = httpx.post(server.base_url + "/lora-adapters", content=content, headers={"Content-Type": "application/json"})
    assert res.status_code == 400, (body, res.text)
    assert res.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(server.base_url + "/lora-adapters").json()[0]["scale"] == 1.0  # unchanged


def test_curl_lists_the_adapters(server: ServerProcess) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run([curl, "-sf", server.base_url + "/lora-adapters"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["id"] == 0


def test_init_without_apply_and_scaled(files: LoraFiles, expected: dict[str, list[int]]) -> None:
    for server in start(["-m", str(files.base), "--lora-scaled", f"{files.adapter}:1.0", "--lora-init-without-apply",
                         *SPEC], "lora-init"):
        assert httpx.get(server.base_url + "/lora-adapters").json()[0]["scale"] == 0.0
        assert tokens(server) == expected["base"]
        assert tokens(server, lora=[{"id": 0, "scale": 1.0}]) == expected["merged"]


def test_lora_flags_keep_the_command_line_order() -> None:
    argv = ["--lora", "a.gguf", "--lora-scaled", 'b.gguf:0.5,"c,1.gguf":2', "--lora=d.gguf,e.gguf"]
    values = {"lora": ["a.gguf", "d.gguf,e.gguf"], "lora_scaled": ['b.gguf:0.5,"c,1.gguf":2']}
    got = [(str(p), s) for p, s in lora_files(values, argv)]
    assert got == [("a.gguf", 1.0), ("b.gguf", 0.5), ("c,1.gguf", 2.0), ("d.gguf", 1.0), ("e.gguf", 1.0)]
    with pytest.raises(SettingsError, match="FNAME:SCALE"):
        lora_files({"lora_scaled": ["x.gguf"]}, ["--lora-scaled", "x.gguf"])


@pytest.mark.parametrize("case", ["missing", "not-an-adapter", "other-model", "bad-scale"])
def test_a_bad_adapter_at_start_exits_1_with_one_line(case: str, files: LoraFiles, tmp_path: Path) -> None:
    other = write_lora("mixtral", tmp_path)
    flag = {"missing": ["--lora", str(tmp_path / "nope.gguf")], "not-an-adapter": ["--lora", str(files.base)],
            "other-model": ["--lora", str(other.adapter)], "bad-scale": ["--lora-scaled", f"{files.adapter}:x"]}[case]
    out = subprocess.run([sys.executable, "-m", "asgi.main", "--port", str(free_port()), "-m", str(files.base), *flag],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyllama-server: error:"), out.stderr


def test_an_alora_over_http(tmp_path: Path) -> None:
    """An aLoRA (`adapter.alora.invocation_tokens`) on a real server: /lora-adapters lists its
    invocation tokens and their text; a prompt with the sequence gets the base model's
    reading before it and the adapter's after (tests/models/test_lora.py's reference);
    without the sequence, the base model's tokens; two aLoRAs at once are a 400."""
    from tests.models.test_lora import ALORA_PROMPT, INVOKE, greedy_hybrid

    files = write_lora("llama", tmp_path, invocation=INVOKE)
    (tmp_path / "b").mkdir()
    second = write_lora("llama", tmp_path / "b", invocation=INVOKE)
    for server in start(["-m", str(files.base), "--lora", str(files.adapter), "--lora-scaled",
                         f"{second.adapter}:0", *SPEC], "alora"):
        listed = httpx.get(server.base_url + "/lora-adapters").json()
        detok = httpx.post(server.base_url + "/detokenize", json={"tokens": list(INVOKE)}).json()["content"]
        assert listed[0]["alora_invocation_tokens"] == list(INVOKE)
        assert listed[0]["alora_invocation_string"] == detok
        assert set(listed[0]) == {"id", "path", "scale", "task_name", "prompt_prefix", "alora_invocation_string",
                                  "alora_invocation_tokens"}
        want = greedy_hybrid(files.base, files.merged, ALORA_PROMPT, 10, N_PREDICT)
        body = {"prompt": ALORA_PROMPT, "n_predict": N_PREDICT, "temperature": 0, "return_tokens": True}
        res = httpx.post(server.base_url + "/completion", json=body, timeout=120).json()
        assert res["tokens"] == want
        plain = [t for t in ALORA_PROMPT if t != INVOKE[1]]
        # (uncached: as in llama-server, a slot that read the invocation keeps its cache for a
        # task that does not find it, adapter entries included; see pyllama/alora.py)
        res = httpx.post(server.base_url + "/completion", json={**body, "prompt": plain, "cache_prompt": False},
                         timeout=120).json()
        assert res["tokens"] == greedy_hybrid(files.base, files.base, plain, 0, N_PREDICT)
        both = httpx.post(server.base_url + "/completion", timeout=120,
                          json={**body, "lora": [{"id": 0, "scale": 1}, {"id": 1, "scale": 1}]})
        assert both.status_code == 400
        assert both.json()["error"]["message"] == "Cannot run multiple aLoRAs in a single request"
