"""/rerank (and /v1/rerank, /reranking, /v1/reranking) on a real server with a synthetic reranker.

The reranker is the synthetic BERT of tests/models/synth.py (it carries the cls / cls.output
classifier head) with a vocabulary that asks for BOS, EOS and SEP, so the default input
shape BOS query EOS SEP document EOS is visible; a second file adds a `rerank` chat
template. Every score must equal the engine's own embed(..., pooling="rank") on the input
llama-server's format_prompt_rerank builds, computed here independently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import httpx
import numpy as np
import pytest

from pyllama.embeddings import embed
from pyllama.engine import Model
from tests.models import synth
from tests.models.test_synthetic import EXPECTED, TOLERANCE
from tests.server.conftest import ServerProcess

N_CTX = 128
SEP = synth.N_VOCAB - 1  # the last word of the synthetic vocabulary becomes a control token "<sep>"
TEMPLATE = "Query: {query}\nDocument: {document}<sep>"
QUERY = "w5 w17 w9"
DOCS = ["w100 w101 w102", "w7", "w5 w17", "abc def", "w250 w251 w252 w253"]
PATHS = ["/rerank", "/v1/rerank", "/reranking", "/v1/reranking"]
SPEC = ["--cache-type-k", "f32", "--cache-type-v", "f32", "--weights", "dense", "-c", str(N_CTX)]


def write_reranker(path: Path, template: str | None) -> Path:
    """synth's BERT (same weights) with a BOS/EOS/SEP vocabulary and optionally a rerank template."""
    b = synth.Builder("bert", "bert")
    synth.bert(b)
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_name("tiny test reranker")
    for key, v, kind in b.kv:
        {"u32": w.add_uint32, "f32": w.add_float32, "bool": w.add_bool}.get(kind, w.add_string)(key, v)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"w{i}" for i in range(synth.N_VOCAB - len(tokens) - 1)] + ["<sep>"]
    types = [2, 3, 3] + [6] * 256 + [1] * (synth.N_VOCAB - 260) + [3]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(synth.N_VOCAB)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_sep_token_id(SEP)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(True)
    if template is not None:
        w.add_string("tokenizer.chat_template.rerank", template)
    for name, a in b.tensors:
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def start(args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
    server = ServerProcess(args, env=env, log_name="rerank")  # port: conftest.free_port (PYLLAMA_TEST_PORTS)
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rerank")
    return {"plain": write_reranker(d / "reranker.gguf", None),
            "template": write_reranker(d / "reranker-template.gguf", TEMPLATE)}


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> Model:
    return Model.load(files["plain"], weights="dense", n_ctx=N_CTX, cache_type_k="f32", cache_type_v="f32")


@pytest.fixture(scope="module")
def server(files: dict[str, Path]) -> Iterator[ServerProcess]:
    s = start(["-m", str(files["plain"]), "--rerank", *SPEC])
    yield s
    s.stop()


def default_input(model: Model, query: str, doc: str) -> list[int]:
    tok = model.tokenizer
    words = [tok.tokenize(t, add_special=False, parse_special=False) for t in (query, doc)]
    return [1, *words[0], 2, SEP, *words[1], 2]


def score(model: Model, tokens: list[int]) -> float:
    return float(embed(model, tokens, pooling="rank")[0, 0])


def test_scores_equal_the_engines_rank_pooling(server: ServerProcess, model: Model) -> None:
    inputs = [default_input(model, QUERY, d) for d in DOCS]
    want = [score(model, t) for t in inputs]
    assert len({round(w, 6) for w in want}) == len(DOCS)  # distinct scores: the ordering is meaningful
    for path in PATHS:
        res = httpx.post(server.base_url + path, json={"query": QUERY, "documents": DOCS}, timeout=60)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["object"] == "list" and body["model"].endswith("/reranker.gguf")  # the -m path, as llama-server
        n = sum(len(t) for t in inputs)
        assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
        results = body["results"]
        assert [r["index"] for r in results] == sorted(range(len(DOCS)), key=lambda i: -want[i])
        for r in results:
            assert set(r) == {"index", "relevance_score"}
            assert abs(r["relevance_score"] - want[r["index"]]) < 1e-4, (r, want)


def test_top_n_model_and_tei_shape(server: ServerProcess, model: Model) -> None:
    want = [score(model, default_input(model, QUERY, d)) for d in DOCS]
    order = sorted(range(len(DOCS)), key=lambda i: -want[i])
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        body = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2, "model": "anything"}).json()
        assert [r["index"] for r in body["results"]] == order[:2] and body["model"] == "anything"
        assert c.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 0}).json()["results"] == []
        assert len(c.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 99}).json()["results"]) == 5
        # Jina/Cohere shape: return_text has no effect (llama-server reads it for TEI only)
        body = c.post("/rerank", json={"query": QUERY, "documents": DOCS, "return_text": True}).json()
        assert all("text" not in r for r in body["results"])
        # TEI shape: `texts`, a bare list of {index, score, text?}
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
        assert isinstance(tei, list) and [r["index"] for r in tei] == order
        for r in tei:
            assert r["text"] == DOCS[r["index"]] and abs(r["score"] - want[r["index"]]) < 1e-4
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS[:2]}).json()
        assert all(set(r) == {"index", "score"} for r in tei)


def test_bad_requests_are_400(server: ServerProcess) -> None:
    cases: list[tuple[Any, str]] = [
        ({"documents": DOCS}, '"query" must be provided'),
        ({"query": 5, "documents": DOCS}, '"query" must be a string'),
        ({"query": "q"}, "non-empty string array"),
        ({"query": "q", "documents": []}, "non-empty string array"),
        ({"query": "q", "documents": "one"}, "non-empty string array"),
        ({"query": "q", "documents": ["a", 3]}, "non-empty string array"),
        ({"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
        ({"query": "q", "documents": ["x" * 600]}, "context"),
    ]
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        for body, message in cases:
            res = c.post("/v1/rerank", json=body)
            assert res.status_code == 400, (body, res.text)
            error = res.json()["error"]
            kind = "exceed_context_size_error" if message == "context" else "invalid_request_error"
            assert message in error["message"] and error["type"] == kind, (body, error)
        for raw in (b"", b"[1]", b"{", b'"q"'):
            res = c.post("/rerank", content=raw, headers={"Content-Type": "application/json"})
            assert res.status_code == 400, (raw, res.text)
        # odd values on every field: a 4xx or a 200, never a 5xx
        for field in ("query", "documents", "texts", "top_n", "return_text", "model"):
            for value in (None, 1.5, True, [], {}, [[1]], "s", 10**30, -(10**30)):
                body = {"query": "q", "documents": ["a", "b"], field: value}
                res = c.post("/rerank", content=json.dumps(body).encode())
                assert res.status_code < 500, (body, res.text)
        assert c.get("/health").json()["status"] == "ok"


def test_rerank_template_from_the_gguf(files: dict[str, Path]) -> None:
    m = Model.load(files["template"], weights="dense", n_ctx=N_CTX, cache_type_k="f32", cache_type_v="f32")
    docs = DOCS[:3]
    inputs = [m.tokenizer.tokenize(TEMPLATE.replace("{query}", QUERY).replace("{document}", d),
                                   add_special=False, parse_special=True) for d in docs]
    assert all(t[-1] == SEP and t[0] != 1 for t in inputs)  # the template, not the default shape
    want = [score(m, t) for t in inputs]
    s = start(["-m", str(files["template"]), *SPEC], env={"LLAMA_ARG_RERANKING": "1"})
    try:
        body = httpx.post(s.base_url + "/reranking", json={"query": QUERY, "documents": docs}, timeout=60).json()
    finally:
        s.stop()
    n = sum(len(t) for t in inputs)
    assert body["usage"]["prompt_tokens"] == n
    for r in body["results"]:
        assert abs(r["relevance_score"] - want[r["index"]]) < 1e-4, (r, want)
    assert np.argmax(want) == body["results"][0]["index"]


@pytest.mark.parametrize("args", [["--embeddings"], ["--embeddings", "--pooling", "mean"], ["--pooling", "rank"]])
def test_refused_without_rerank(files: dict[str, Path], args: list[str]) -> None:
    """llama-server: embeddings on and pooling rank, else 501 not_supported_error."""
    s = start(["-m", str(files["plain"]), *SPEC, *args])
    try:
        for path in PATHS:
            res = httpx.post(s.base_url + path, json={"query": "q", "documents": ["a"]}, timeout=60)
            assert res.status_code == 501, res.text
            error = res.json()["error"]
            assert error["type"] == "not_supported_error" and "--reranking" in error["message"]
    finally:
        s.stop()


def test_scheduler_rank_pooling_through_embeddings(files: dict[str, Path], model: Model) -> None:
    """/embedding on a --rerank server goes through embed_task with the rank head: the raw score,
    equal to llama.cpp's (the llama-cpp-python oracle's rank output on synth.PROMPT, expected/bert.npz)."""
    s = start(["-m", str(files["plain"]), "--rerank", *SPEC])
    try:
        tokens = default_input(model, QUERY, DOCS[0])
        res = httpx.post(s.base_url + "/embedding", json={"content": tokens}, timeout=60)
        oracle = httpx.post(s.base_url + "/embedding", json={"content": synth.PROMPT}, timeout=60)
    finally:
        s.stop()
    want = float(np.load(EXPECTED / "bert.npz")["rank"][0])
    assert oracle.status_code == 200 and abs(oracle.json()[0]["embedding"][0][0] - want) < TOLERANCE, oracle.text
    assert res.status_code == 200, res.text
    got = res.json()[0]["embedding"]
    assert len(got) == 1 and len(got[0]) == 1
    assert abs(got[0][0] - score(model, tokens)) < 1e-4


@pytest.mark.parametrize("top_n,want", [(None, 4), (2, 2), (99, 4)])
def test_headless_model_ranks_like_llama_server(smollm2_path: Path, top_n: int | None, want: int) -> None:
    """A model without a classifier head (SmolLM2) under --reranking: llama-server scores each
    document with the first float of the pooled row (llama.cpp's test_rerank_top_n and
    test_rerank_tei_top_n pass on it), so this is a 200 with top_n honoured, not an error."""
    s = start(["-m", str(smollm2_path), "--reranking", "-c", "512", "-np", "1"])
    try:
        docs = ["A machine uses power.", "Learning is acquiring knowledge.",
                "Machine learning is a field of AI.", "Paris est une ville."]
        extra = {} if top_n is None else {"top_n": top_n}
        res = httpx.post(s.base_url + "/rerank", json={"query": "Machine learning is", "documents": docs, **extra}, timeout=120)
        assert res.status_code == 200, res.text
        results = res.json()["results"]
        assert len(results) == want
        scores = [r["relevance_score"] for r in results]
        assert all(isinstance(x, float) and np.isfinite(x) for x in scores) and scores == sorted(scores, reverse=True)
        res = httpx.post(s.base_url + "/rerank", json={"query": "Machine learning is", "texts": docs, **extra}, timeout=120)
        assert res.status_code == 200, res.text
        assert len(res.json()) == want and all("score" in r for r in res.json())
    finally:
        s.stop()
