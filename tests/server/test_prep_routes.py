"""The preparation process on the routes beyond chat and completions: /v1/messages (and
its token count), /v1/responses (and the input_tokens counts), /infill, /embeddings,
/v1/embeddings and /rerank answer a large body exactly as they answer a small one.

As in test_prep_process.py, a body is made large without changing its meaning by padding
it with JSON whitespace past --prep-process-bytes; every request is sent small (prepared
in-process) and padded (prepared in the child) to the same server, and the two answers
must match (greedy text, token ids, embeddings within 1e-6, the same 4xx and message).
That the padded ones really go through the child is shown by freezing it (SIGSTOP).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.models import synth
from tests.server.conftest import ServerProcess, start
from tests.server.test_prep_process import _in_thread, child_pid, post
from tests.server.test_rerank import DOCS, QUERY, SPEC, TEMPLATE, write_reranker

THRESHOLD = 64 << 10
TEXT = "Hello wörld! 12345 \u4f60\u597d " * 200  # ~5 KB: small bodies stay below the threshold
VOLATILE = {"id", "created", "created_at", "completed_at", "timings", "usage", "system_fingerprint",
            "tokens_cached", "id_slot", "item_id"}


def same(a: Any, b: Any, where: str = "") -> None:
    """Equal answers, ids and times aside; floats (embeddings, scores) within 1e-6."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) - VOLATILE
        assert keys == set(b) - VOLATILE, where
        for k in keys:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-6), (where, a, b)
    elif isinstance(a, str) and isinstance(b, str) and a.startswith(("msg_", "resp_", "rs_")):
        assert a[:3] == b[:3], where  # random ids
    else:
        assert a == b, (where, a, b)


def compare(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    small = post(client, path, body)
    large = post(client, path, body, pad=THRESHOLD + 10)
    assert small.status_code < 500 or small.status_code == 501, small.text
    assert large.status_code == small.status_code, (large.text[:300], small.text[:300])
    same(large.json(), small.json())
    return small


@pytest.fixture(scope="module")
def smol(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-to", "30", "--embeddings",
                      "--prep-process-bytes", str(THRESHOLD)], "prep-routes")


USER = [{"role": "user", "content": "Say hi"}]
TOOL = {"name": "get_time", "description": "the time", "input_schema": {"type": "object", "properties": {}}}
SMOL_CASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/messages", {"model": "m", "max_tokens": 6, "temperature": 0, "messages": USER}),
    ("/v1/messages", {"model": "m", "max_tokens": 4, "temperature": 0, "system": "Be brief.",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": TEXT}]}]}),
    ("/v1/messages", {"max_tokens": 4, "temperature": 0, "tools": [TOOL], "tool_choice": {"type": "any"},
                      "messages": [{"role": "user", "content": "time?"},
                                   {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                                                                      "name": "get_time", "input": {}}]},
                                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                                 "content": "noon"}]}]}),
    ("/v1/messages", {"max_tokens": 4}),  # no messages: 400
    ("/v1/messages", {"messages": "hi"}),  # 400
    ("/v1/messages", {"messages": USER, "tool_choice": "any"}),  # 400
    ("/v1/messages", {"messages": [{"role": "user", "content": "x " * 20000}]}),  # beyond the context: 400
    ("/v1/messages", {"messages": USER, "max_tokens": "many"}),  # the parameter's error: 400
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": TEXT}], "system": "Be brief."}),
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "x " * 20000}]}),  # counted, not refused
    ("/v1/messages/count_tokens", {"system": "s"}),  # 400
    ("/v1/responses", {"input": "Say hi", "max_output_tokens": 6, "temperature": 0}),
    ("/v1/responses", {"instructions": "Be brief.", "max_output_tokens": 4, "temperature": 0,
                       "input": [{"role": "user", "content": [{"type": "input_text", "text": TEXT}]}]}),
    ("/v1/responses", {}),  # 400
    ("/v1/responses", {"input": 5}),  # 400
    ("/v1/responses", {"input": "hi", "return_progress": "yes"}),  # 400
    ("/v1/responses", {"input": "hi", "previous_response_id": "resp_1"}),  # 400
    ("/v1/responses/input_tokens", {"input": TEXT}),
    ("/v1/chat/completions/input_tokens", {"messages": [{"role": "user", "content": TEXT}]}),
    ("/v1/chat/completions/input_tokens", {"messages": 5}),  # 400
    ("/v1/embeddings", {"input": TEXT[:1500]}),
    ("/v1/embeddings", {"input": ["a b", "c d e", [1, 2, 3]], "encoding_format": "base64"}),
    ("/v1/embeddings", {"content": "hello", "embd_normalize": -1}),  # the llama.cpp shape
    ("/embeddings", {"content": ["hello", "world"]}),
    ("/v1/embeddings", {"input": []}),  # 400
    ("/v1/embeddings", {}),  # 400
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}),  # 400
    ("/v1/embeddings", {"input": "x", "embd_normalize": "2"}),  # 400
    ("/v1/embeddings", {"input": [1, 2, 99999999]}),  # token id out of range: 400
    ("/v1/embeddings", {"input": [[], "a"]}),  # an empty input: 400
    ("/v1/embeddings", {"input": "x " * 3000}),  # beyond the context: 400
    ("/infill", {"input_prefix": "def f(", "input_suffix": "):"}),  # SmolLM2 has no FIM tokens: 501
    ("/rerank", {"query": 5}),  # not a reranker: 501 before the body's own error
]


@pytest.mark.parametrize(("path", "body"), SMOL_CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(SMOL_CASES)])
def test_same_answers_in_process_and_in_the_child(smol: ServerProcess, path: str, body: dict[str, Any]) -> None:
    with smol.client() as client:
        compare(client, path, body)


def test_streamed_messages_and_responses_through_the_child(smol: ServerProcess) -> None:
    def text(path: str, body: dict[str, Any], pad: int) -> list[str]:
        with smol.client() as client:
            res = post(client, path, body, pad)
        assert res.status_code == 200
        return [line for line in res.text.splitlines() if "_delta" in line or ".delta" in line]

    messages = {"messages": [{"role": "user", "content": "Count to five"}], "max_tokens": 8, "temperature": 0,
                "stream": True}
    assert text("/v1/messages", messages, THRESHOLD + 1) == text("/v1/messages", messages, 0) != []
    responses = {"input": "Count to five", "max_output_tokens": 8, "temperature": 0, "stream": True,
                 "return_progress": True}
    large, small = text("/v1/responses", responses, THRESHOLD + 1), text("/v1/responses", responses, 0)
    strip = [line.split('"item_id"')[0] for line in large], [line.split('"item_id"')[0] for line in small]
    assert strip[0] == strip[1] != []


FROZEN: list[tuple[str, dict[str, Any]]] = [
    ("/v1/messages", {"messages": USER, "max_tokens": 2, "temperature": 0}),
    ("/v1/messages/count_tokens", {"messages": USER}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 2, "temperature": 0}),
    ("/v1/responses/input_tokens", {"input": "hi"}),
    ("/v1/chat/completions/input_tokens", {"messages": USER}),
    ("/v1/embeddings", {"input": "hi"}),
    ("/infill", {"input_prefix": "a", "input_suffix": "b"}),
    ("/rerank", {"query": "q", "documents": ["d"]}),
]


@pytest.mark.parametrize("batch", [FROZEN[:4], FROZEN[4:]], ids=["chat-shaped", "others"])
def test_large_bodies_of_every_route_wait_for_the_child(smol: ServerProcess, batch: list[Any]) -> None:
    """With the child frozen, no padded request is answered (they are all in its queue)
    while small ones and /health are; thawed, each gets the small one's answer."""
    pid = child_pid(smol)
    os.kill(pid, signal.SIGSTOP)
    try:
        waiting = [_in_thread(lambda p=path, b=body: post(smol.client(), p, b, THRESHOLD + 1)) for path, body in batch]
        time.sleep(1.5)
        assert not [path for (path, _), (_, out) in zip(batch, waiting, strict=True) if out], \
            "a large body was answered while the preparation process was frozen"
        assert httpx.get(smol.base_url + "/health", timeout=5).status_code == 200
        with smol.client() as client:
            small = [post(client, path, body) for path, body in batch]
    finally:
        os.kill(pid, signal.SIGCONT)
    for (path, _), (thread, out), answer in zip(batch, waiting, small, strict=True):
        thread.join(60)
        assert out, path
        assert out[0].status_code == answer.status_code, path
        same(out[0].json(), answer.json(), path)


def test_health_answers_while_a_multi_megabyte_body_is_prepared(smol: ServerProcess) -> None:
    """4 MB of messages counted in the child (tokenizing them takes it about a second or
    more): /health keeps answering at once meanwhile."""
    body = {"messages": [{"role": "user", "content": "word " * (800 << 10)}]}
    thread, out = _in_thread(lambda: post(httpx.Client(base_url=smol.base_url, timeout=120),
                                          "/v1/messages/count_tokens", body))
    slowest, polls = 0.0, 0
    while thread.is_alive():
        t0 = time.monotonic()
        assert httpx.get(smol.base_url + "/health", timeout=10).status_code == 200
        slowest, polls = max(slowest, time.monotonic() - t0), polls + 1
        time.sleep(0.05)
    thread.join()
    assert out[0].status_code == 200 and out[0].json()["input_tokens"] > 800 << 10
    assert polls >= 3, "the preparation ended too soon to tell anything"
    assert slowest < 2.0, slowest  # in-process, the pure-Python tokenizer held the GIL for whole seconds


# /infill needs FIM tokens: a synthetic llama whose vocabulary names four of its words so.
FIM = {"fim_pre": 290, "fim_suf": 291, "fim_mid": 292, "fim_sep": 293, "fim_rep": 294}


def write_fim_model(path: Path) -> Path:
    b = synth.Builder("llama", "llama")
    synth.llama_like(b)
    for name, token_id in FIM.items():
        b.set(f"tokenizer.ggml.{name}_token_id", token_id, "u32")
    b.write(path)
    return path


@pytest.fixture(scope="module")
def coder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_fim_model(tmp_path_factory.mktemp("fim") / "coder.gguf")
    yield from start(["-m", str(model), *SPEC[:-2], "-c", "128", "-b", "32", "-ub", "32",
                      "--prep-process-bytes", str(THRESHOLD)], "prep-fim")


INFILL = {"input_prefix": "w5 w17 w9 " * 12, "input_suffix": "w10 w11", "prompt": "w3", "n_predict": 4,
          "temperature": 0, "return_tokens": True, "cache_prompt": False,
          "input_extra": [{"filename": "a.py", "text": "w100 w101 w102"}, {"text": "w7"}]}
INFILL_CASES: list[dict[str, Any]] = [
    INFILL,
    {**INFILL, "input_prefix": ["w5", 17, "w9"], "input_extra": []},
    {"input_suffix": "x"},  # 400
    {**INFILL, "prompt": 5},  # 400
    {**INFILL, "input_extra": [{"filename": "a"}]},  # 400
    {**INFILL, "input_prefix": [1.5], "temperature": "hot"},  # the parameter's error comes first: 400
    {**INFILL, "input_prefix": [1.5]},  # then the prefix's: 400
]


@pytest.mark.parametrize("body", INFILL_CASES, ids=[str(i) for i in range(len(INFILL_CASES))])
def test_infill_same_in_process_and_in_the_child(coder: ServerProcess, body: dict[str, Any]) -> None:
    with coder.client() as client:
        res = compare(client, "/infill", body)
    if body is INFILL:
        assert res.status_code == 200 and len(res.json()["tokens"]) == 4


@pytest.fixture(scope="module", params=["plain", "template"])
def reranker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("rerank")
    path = write_reranker(folder / "r.gguf", TEMPLATE if request.param == "template" else None)
    yield from start(["-m", str(path), "--rerank", *SPEC, "--prep-process-bytes", str(THRESHOLD)], "prep-rerank")


RERANK_CASES: list[dict[str, Any]] = [
    {"query": QUERY, "documents": DOCS},
    {"query": QUERY, "documents": DOCS, "top_n": 2},
    {"query": QUERY, "texts": DOCS, "return_text": True},
    {"documents": DOCS},  # 400
    {"query": 5, "documents": DOCS},  # 400
    {"query": QUERY, "documents": []},  # 400
    {"query": QUERY, "documents": DOCS, "top_n": -1},  # 400
    {"query": QUERY, "documents": ["w1 " * 200]},  # beyond the context: 400
]


@pytest.mark.parametrize("body", RERANK_CASES, ids=[str(i) for i in range(len(RERANK_CASES))])
def test_rerank_same_in_process_and_in_the_child(reranker: ServerProcess, body: dict[str, Any]) -> None:
    with reranker.client() as client:
        res = compare(client, "/v1/rerank", body)
    if body is RERANK_CASES[0]:
        assert res.status_code == 200 and len(res.json()["results"]) == len(DOCS)
