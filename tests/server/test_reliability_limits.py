"""Request limits, the bounded wait queue, idle-connection timeouts and API keys read from
--api-key-file, against one real server (-np 1, small limits, verbose logging)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess, start

KEY = "sk-limits-secret-5678"
WRONG_KEY = "sk-wrong-secret-9999"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def limited(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("limits")
    keys = folder / "keys.txt"
    keys.write_text(f"\n  {KEY}  \nsk-other-key\n")
    yield from start(
        ["-m", str(smollm2_path), "-c", "256", "-np", "1", "-n", "120", "--api-key-file", str(keys), "-v",
         "--max-queue", "1", "--max-body-size", "8192", "--max-prompts", "3", "--max-n-probs", "5",
         "--max-stop", "2", "--max-stop-length", "10", "--max-grammar-size", "100", "--max-logit-bias", "3",
         "--timeout", "2"],
        "limits",
    )


def post(server: ServerProcess, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers=AUTH, timeout=120, **kw)


def assert_error(res: httpx.Response, status: int, words: str) -> None:
    assert res.status_code == status, res.text
    error = res.json()["error"]
    assert set(error) >= {"code", "message", "type"} and error["code"] == status
    assert words in error["message"], error


def test_body_size_is_413_in_the_openai_shape(limited: ServerProcess) -> None:
    big = {"prompt": "x " * 5000}
    assert_error(post(limited, "/completion", big), 413, "--max-body-size")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming the body
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"y " * 100
        yield b'"}'

    res = httpx.post(limited.base_url + "/completion", content=chunks(), headers=AUTH, timeout=60)
    assert res.status_code == 413 and res.json()["error"]["type"] == "invalid_request_error"
    assert post(limited, "/tokenize", {"content": "fits"}).status_code == 200


@pytest.mark.parametrize("body, words", [
    ({"prompt": ["a", "b", "c", "d"]}, "--max-prompts"),
    ({"prompt": "hi", "n_probs": 6}, "--max-n-probs"),
    ({"prompt": "hi", "logprobs": 50}, "--max-n-probs"),
    ({"prompt": "hi", "stop": ["a", "b", "c"]}, "--max-stop"),
    ({"prompt": "hi", "stop": "x" * 11}, "--max-stop-length"),
    ({"prompt": "hi", "grammar": "root ::= " + " | ".join(f'"{i}"' for i in range(40))}, "--max-grammar-size"),
    ({"prompt": "hi", "json_schema": {"type": "object", "description": "d" * 200}}, "--max-grammar-size"),
    ({"prompt": "hi", "logit_bias": [[1, 1], [2, 1], [3, 1], [4, 1]]}, "--max-logit-bias"),
    ({"prompt": "hi", "logit_bias": {"1": 1, "2": 1, "3": 1, "4": 1}}, "--max-logit-bias"),
    ({"prompt": "word " * 300}, "exceeds the available context size"),
])
def test_limits_are_400(limited: ServerProcess, body: dict[str, Any], words: str) -> None:
    assert_error(post(limited, "/completion", body), 400, words)


def test_limits_apply_to_chat_and_embeddings_routes(limited: ServerProcess) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 6}
    assert_error(post(limited, "/v1/chat/completions", chat), 400, "--max-n-probs")
    chat = {"messages": [{"role": "user", "content": "hi"}], "stop": ["1", "2", "3"]}
    assert_error(post(limited, "/v1/chat/completions", chat), 400, "--max-stop")
    res = post(limited, "/v1/completions", {"prompt": ["a", "b", "c", "d"]})
    assert_error(res, 400, "--max-prompts")
    ctx = post(limited, "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 300}]})
    assert_error(ctx, 400, "exceeds the available context size")
    assert ctx.json()["error"]["type"] == "exceed_context_size_error"


def test_n_predict_of_the_request_wins_over_the_server(limited: ServerProcess) -> None:
    """-n 120 is the default a request's n_predict replaces, above or below it (llama-server's
    slot.n_predict_max); -1 means the server's. The stop strings end the generation early,
    so the test reads the applied value without waiting for the tokens."""
    for asked, applied in ((500, 500), (-1, 120), (5, 5)):
        body = post(limited, "/completion", {"prompt": "Count: 1, 2, 3,", "n_predict": asked, "stop": [",", " "],
                                             "temperature": 0}).json()
        assert body["generation_settings"]["n_predict"] == applied, (asked, body["generation_settings"])
        assert body["tokens_predicted"] <= applied


def test_full_slots_queue_then_503_with_retry_after(limited: ServerProcess) -> None:
    base = limited.base_url
    long = {"prompt": "Count: 1, 2, 3,", "n_predict": 120, "ignore_eos": True, "stream": True}
    results: dict[str, Any] = {"events": 0}
    release = threading.Event()

    def streaming() -> None:  # holds the only slot until the test releases it (by hanging up)
        with httpx.stream("POST", base + "/completion", json=long, headers=AUTH, timeout=120) as res:
            results["stream"] = res.status_code
            for line in res.iter_lines():
                results["events"] += line.startswith("data: ")
                if release.is_set():
                    break

    first = threading.Thread(target=streaming)
    first.start()
    deadline = time.monotonic() + 120
    while not httpx.get(base + "/slots", headers=AUTH, timeout=120).json()[0]["is_processing"]:
        assert time.monotonic() < deadline, "the first request never started"
        time.sleep(0.02)
    health = httpx.get(base + "/health?fail_on_no_slot=1")
    assert health.status_code == 503 and health.json()["status"] == "no slot available"
    assert httpx.get(base + "/health").status_code == 200  # without the flag: busy but healthy

    def waiting() -> None:
        results["queued"] = post(limited, "/completion", {"prompt": "Hi", "n_predict": 2})

    second = threading.Thread(target=waiting)
    second.start()
    time.sleep(1.0)  # the second request is deferred: one busy slot + one waiting task = the bound
    over = post(limited, "/completion", {"prompt": "Hi", "n_predict": 2})
    release.set()
    assert_error(over, 503, "--max-queue 1")
    assert over.headers["Retry-After"].isdigit() and int(over.headers["Retry-After"]) >= 1
    assert over.json()["error"]["type"] == "unavailable_error"
    first.join(120)
    second.join(120)
    assert results["stream"] == 200 and results["events"] >= 1
    assert results["queued"].status_code == 200  # the queued one was served, not dropped
    deadline = time.monotonic() + 120
    while httpx.get(base + "/health?fail_on_no_slot=1").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_idle_and_stuck_connections_are_closed(limited: ServerProcess) -> None:
    """--timeout 2: a client that sends half a request and stalls is cut off."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=15) as sock:
        sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\"" % KEY.encode())
        t0 = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        waited = time.monotonic() - t0
    assert waited < 10, waited
    assert data == b"" or b" 408 " in data.split(b"\r\n")[0] or b" 400 " in data.split(b"\r\n")[0], data[:200]
    with socket.create_connection(("127.0.0.1", limited.port), timeout=15) as sock:  # idle after a request
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        while sock.recv(4096):
            pass
        assert time.monotonic() - t0 < 10


def test_keys_from_the_file_and_never_in_the_log(limited: ServerProcess) -> None:
    base = limited.base_url
    assert httpx.post(base + "/tokenize", json={"content": "a"}).status_code == 401
    assert httpx.post(base + "/tokenize", json={"content": "a"},
                      headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 401
    assert httpx.post(base + "/tokenize", json={"content": "a"}, headers=AUTH).status_code == 200
    other = httpx.post(base + "/tokenize", json={"content": "a"}, headers={"Authorization": "Bearer sk-other-key"})
    assert other.status_code == 200  # every line of the file is a key
    assert httpx.post(base + "/tokenize", json={"content": "a"}, headers={"X-Api-Key": KEY}).status_code == 200
    time.sleep(0.3)
    log = limited.log_path.read_text()
    assert "unauthorized request to /tokenize" in log  # failures are logged...
    assert KEY not in log and WRONG_KEY not in log and "sk-other-key" not in log  # ...keys never


def test_openapi_needs_a_key_and_documents_the_limits(limited: ServerProcess) -> None:
    assert httpx.get(limited.base_url + "/openapi.json").status_code == 401
    doc = httpx.get(limited.base_url + "/openapi.json", headers=AUTH).json()
    props = doc["paths"]["/completion"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["n_probs"]["maximum"] == 5 and props["stop"]["anyOf"][1]["maxItems"] == 2
    assert json.dumps(doc)  # plain JSON


def test_a_long_word_does_not_stall_the_tokenizer(smollm2_path: Path) -> None:
    """A 100 kB run of letters (one pre-tokenizer word) used to take minutes in BPE (an
    O(n^2) merge loop) while the event loop waited; now it is the heap merge, n log n."""
    from pyllama.gguf_file import read_gguf
    from pyllama.tokenizer.bpe import bpe_merge, bpe_merge_heap, merge_ranks

    ranks = merge_ranks(read_gguf(smollm2_path).metadata["tokenizer.ggml.merges"])
    t0 = time.monotonic()
    merged = bpe_merge(list("a" * 100_000), ranks)
    assert time.monotonic() - t0 < 10 and "".join(merged) == "a" * 100_000
    for word in ("abracadabra" * 30, "the quick brown fox" * 20, "ĠĠĠĊĊ" * 70):  # both paths agree
        short = bpe_merge(list(word[:200]), ranks)
        assert bpe_merge_heap(list(word[:200]), ranks) == short
