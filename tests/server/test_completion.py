"""/completion, /completions and /v1/completions on a real server: values, streaming, options."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.server.conftest import ServerProcess, sse_events

PROMPT = "Building a website can be done in 10 simple steps:"
GREEDY = {"temperature": 0.0}


def complete(server: ServerProcess, **body: Any) -> dict[str, Any]:
    res = httpx.post(server.base_url + "/completion", json=body, timeout=120)
    assert res.status_code == 200, res.text
    data: dict[str, Any] = res.json()
    return data


def stream(server: ServerProcess, path: str = "/completion", **body: Any) -> list[Any]:
    with httpx.Client(timeout=120) as c:
        res = c.post(server.base_url + path, json={**body, "stream": True})
        assert res.status_code == 200, res.text
        assert res.headers["content-type"].startswith("text/event-stream")
        return sse_events(res)


def test_seed_curl_example(server: ServerProcess) -> None:
    """The seeds' curl command, verbatim apart from the port and n_predict (128 -> 16, for time)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is required for the seeds' example")
    out = subprocess.run(
        [curl, "--silent", "--request", "POST", "--url", f"{server.base_url}/completion",
         "--header", "Content-Type: application/json",
         "--data", '{"prompt": "Building a website can be done in 10 simple steps:","n_predict": 16}'],
        capture_output=True, text=True, timeout=300, check=True,
    )
    body = json.loads(out.stdout)
    assert body["stop"] is True and body["tokens_predicted"] <= 16 and len(body["content"]) > 20
    assert body["tokens_evaluated"] == 13 and body["prompt"] == PROMPT
    assert body["stop_type"] in ("limit", "eos") and body["stopped_limit"] == (body["stop_type"] == "limit")


def test_completion_values(server: ServerProcess) -> None:
    body = complete(server, prompt=PROMPT, n_predict=8, return_tokens=True, **GREEDY)
    assert body["content"].startswith("\n\n1. **Choose a")
    assert body["tokens_predicted"] == 8 and len(body["tokens"]) == 8
    assert body["timings"]["predicted_n"] == 8 and body["timings"]["prompt_n"] + body["tokens_cached"] == 13
    assert body["stop_type"] == "limit" and body["stopped_limit"] and not body["stopped_eos"]
    assert body["truncated"] is False and body["stopping_word"] == ""
    assert body["model"] == "smollm2" and body["generation_settings"]["n_predict"] == 8
    assert body["generation_settings"]["temperature"] == 0.0
    detok = httpx.post(server.base_url + "/detokenize", json={"tokens": body["tokens"]}).json()["content"]
    assert detok == body["content"]
    assert complete(server, prompt=PROMPT, n_predict=1)["tokens"] == []  # return_tokens defaults to false


def test_stream_equals_non_stream_for_same_seed(server: ServerProcess) -> None:
    # cache_prompt off: like llama.cpp, a different prompt/batch split may change float rounding
    # (the seeds' docs say so for cache_prompt), and this test is about streaming, not caching.
    request = {"prompt": "Once upon a time", "n_predict": 8, "seed": 42, "temperature": 0.9, "cache_prompt": False}
    whole = complete(server, **request)
    events = stream(server, **request)
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    final = events[-1]
    assert final["tokens_predicted"] == whole["tokens_predicted"] == 8
    assert final["generation_settings"]["seed"] == 42 and final["timings"]["predicted_n"] == 8
    assert sum(len(e["tokens"]) for e in events[:-1]) == 8  # chunks always carry their token ids
    assert final["tokens"] == []  # the final result only with return_tokens


def test_stop_string_cut_and_never_streamed(server: ServerProcess) -> None:
    body = complete(server, prompt=PROMPT, n_predict=12, stop=["domain"], **GREEDY)
    assert body["content"] == "\n\n1. **Choose a "
    assert body["stop_type"] == "word" and body["stopped_word"] and body["stopping_word"] == "domain"
    events = stream(server, prompt=PROMPT, n_predict=12, stop=["domain"], **GREEDY)
    chunks = [e["content"] for e in events]
    assert "".join(chunks) == body["content"]
    assert not any("dom" in c for c in chunks)
    assert events[-1]["stopping_word"] == "domain"


def test_n_probs(server: ServerProcess) -> None:
    body = complete(server, prompt="The capital of France is", n_predict=3, n_probs=3, **GREEDY)
    probs = body["completion_probabilities"]
    assert len(probs) == 3
    for entry in probs:
        assert len(entry["top_logprobs"]) == 3 and entry["logprob"] <= 0.0
        assert entry["top_logprobs"][0]["id"] == entry["id"]  # greedy: the chosen token is the most likely
        assert bytes(entry["bytes"]).decode("utf-8", "replace") == entry["token"]
    events = stream(server, prompt="The capital of France is", n_predict=3, n_probs=2, **GREEDY)
    streamed = [p for e in events for p in e.get("completion_probabilities", [])]
    assert [p["id"] for p in streamed] == [p["id"] for p in probs]
    post = complete(server, prompt="The capital of France is", n_predict=1, n_probs=2, post_sampling_probs=True,
                    **GREEDY)["completion_probabilities"][0]
    assert post["prob"] == pytest.approx(1.0) and "top_probs" in post


def test_prompt_shapes(server: ServerProcess) -> None:
    tokens = httpx.post(server.base_url + "/tokenize", json={"content": "Hello, my name is"}).json()["tokens"]
    as_text = complete(server, prompt="Hello, my name is", n_predict=3, **GREEDY)["content"]
    assert complete(server, prompt=tokens, n_predict=3, **GREEDY)["content"] == as_text
    assert complete(server, prompt=["Hello,", *tokens[2:]], n_predict=3, **GREEDY)["content"] == as_text
    both = httpx.post(server.base_url + "/completion", json={"prompt": ["Hello, my name is", "The sky is"],
                                                               "n_predict": 3, **GREEDY}, timeout=120).json()
    assert isinstance(both, list) and [b["index"] for b in both] == [0, 1]
    assert both[0]["content"] == as_text and both[1]["prompt"] == "The sky is"


def test_logit_bias_and_samplers(server: ServerProcess) -> None:
    greedy = complete(server, prompt="Hello, my name is", n_predict=1, return_tokens=True, **GREEDY)
    first = greedy["tokens"][0]
    banned = complete(server, prompt="Hello, my name is", n_predict=1, return_tokens=True,
                      logit_bias=[[first, False]], **GREEDY)
    assert banned["tokens"][0] != first
    as_object = complete(server, prompt="Hello, my name is", n_predict=1, return_tokens=True,
                         logit_bias={str(first): -1000}, **GREEDY)
    assert as_object["tokens"][0] != first
    only_temp = complete(server, prompt="Hello, my name is", n_predict=1, return_tokens=True,
                         samplers=["temperature"], **GREEDY)
    assert only_temp["tokens"][0] == first
    assert only_temp["generation_settings"]["samplers"] == ["temperature"]
    letters = complete(server, prompt="Hello", n_predict=1, samplers="kt", **GREEDY)
    assert letters["generation_settings"]["samplers"] == ["top_k", "temperature"]


def test_sampling_fields_reach_generation_settings(server: ServerProcess) -> None:
    body = complete(server, prompt="Hi", n_predict=1, top_k=5, top_p=0.5, min_p=0.1, typical_p=0.9,
                    repeat_penalty=1.2, repeat_last_n=16, presence_penalty=0.3, frequency_penalty=0.2,
                    mirostat=2, mirostat_tau=4.0, mirostat_eta=0.2, dynatemp_range=0.1, min_keep=2,
                    n_keep=3, ignore_eos=True, top_p_unknown_field=1)
    s = body["generation_settings"]
    assert (s["top_k"], s["top_p"], s["min_p"], s["typical_p"]) == (5, 0.5, pytest.approx(0.1), pytest.approx(0.9))
    assert (s["repeat_penalty"], s["repeat_last_n"], s["mirostat"], s["min_keep"], s["n_keep"]) == (
        pytest.approx(1.2), 16, 2, 2, 3)
    assert s["ignore_eos"] is True
    clamped = complete(server, prompt="Hi", n_predict=1, top_p=7.0)["generation_settings"]["top_p"]
    assert clamped == 1.0  # soft limits clamp, as llama-server does


def test_seed_reproducible(server: ServerProcess) -> None:
    runs = [complete(server, prompt="Once upon a time", n_predict=5, seed=s, temperature=1.5)["content"]
            for s in (7, 7, 8, 9)]
    assert runs[0] == runs[1]
    assert len(set(runs[1:])) >= 2


def test_grammar(server: ServerProcess) -> None:
    body = complete(server, prompt="Is the sky blue? Answer:", n_predict=8, grammar='root ::= " yes" | " no"')
    assert body["content"] in (" yes", " no")
    assert body["generation_settings"]["grammar"] == 'root ::= " yes" | " no"'


def test_json_schema(server: ServerProcess) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"]}
    body = complete(server, prompt="A person as JSON:", n_predict=40, json_schema=schema, **GREEDY)
    assert isinstance(json.loads(body["content"])["name"], str)


def test_cache_prompt_and_id_slot(server: ServerProcess) -> None:
    prompt = "The quick brown fox jumps over the lazy dog because"
    complete(server, prompt=prompt, n_predict=2, id_slot=1, **GREEDY)
    again = complete(server, prompt=prompt, n_predict=2, id_slot=1, **GREEDY)
    assert again["id_slot"] == 1
    assert again["tokens_cached"] == again["tokens_evaluated"] - 1
    cold = complete(server, prompt=prompt, n_predict=2, id_slot=1, cache_prompt=False, **GREEDY)
    assert cold["tokens_cached"] == 0 and cold["content"] == again["content"]


def test_response_fields(server: ServerProcess) -> None:
    body = complete(server, prompt="Hi", n_predict=2, response_fields=["content", "generation_settings/n_predict"])
    assert set(body) == {"content", "generation_settings/n_predict"} and body["generation_settings/n_predict"] == 2


def test_n_predict_zero_and_n_cmpl(server: ServerProcess) -> None:
    body = complete(server, prompt="Hi there", n_predict=0)
    assert body["content"] == "" and body["tokens_predicted"] == 0
    many = httpx.post(server.base_url + "/completion",
                      json={"prompt": "Hi", "n_predict": 3, "n": 2, "seed": 1}, timeout=120).json()
    assert isinstance(many, list) and len(many) == 2
    res = httpx.post(server.base_url + "/completion", json={"prompt": "Hi", "n": 3})
    assert res.status_code == 400 and "Field 'n'" in res.json()["error"]["message"]


def test_openai_completions(server: ServerProcess) -> None:
    client = OpenAI(api_key="dummy", base_url=server.base_url + "/v1")
    res = client.completions.create(model="davinci-002", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    choice = res.choices[0]
    assert choice.text.startswith("\n\n1. **Choose") and choice.finish_reason == "length"
    assert res.usage is not None and (res.usage.prompt_tokens, res.usage.completion_tokens) == (13, 6)
    assert choice.logprobs is not None
    assert res.system_fingerprint is not None and res.system_fingerprint.startswith("b")
    assert res.object == "text_completion" and res.model == "davinci-002"
    chunks = list(client.completions.create(model="x", prompt=PROMPT, max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"
    stopped = client.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0, stop="domain")
    assert stopped.choices[0].text == "\n\n1. **Choose a " and stopped.choices[0].finish_reason == "stop"


def test_v1_completions_sse_framing(server: ServerProcess) -> None:
    events = stream(server, "/v1/completions", prompt="Hi", max_tokens=2)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])


@pytest.mark.parametrize("body, message", [({"prompt": "x", "echo": True}, "Only no echo"),
                                           ({"prompt": "x", "best_of": 2}, "Unsupported param: best_of")])
def test_v1_completions_unsupported(server: ServerProcess, body: dict[str, Any], message: str) -> None:
    res = httpx.post(server.base_url + "/v1/completions", json=body)
    assert res.status_code == 400 and message in res.json()["error"]["message"]


def test_infill_needs_fim_tokens(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/infill", json={"input_prefix": "def f(", "input_suffix": "):"})
    assert res.status_code == 501
    assert res.json()["error"]["message"].startswith("Infill is not supported by this model: prefix token is missing.")


def test_client_disconnect_frees_the_slot(server: ServerProcess) -> None:
    import time

    with httpx.Client(timeout=120) as c, c.stream(
        "POST", server.base_url + "/completion",
        json={"prompt": "Count: 1, 2, 3,", "n_predict": 2000, "ignore_eos": True, "stream": True, "id_slot": 0,
              "cache_prompt": False},
    ) as res:
        # Keep the line iterator referenced: dropping it (a bare `for ... in res.iter_lines():
        # break`) makes httpx close the response at once, which disconnects before /slots is read.
        lines = res.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert '"error"' not in first and '"stop":true' not in first.replace(" ", ""), first
        assert httpx.get(server.base_url + "/slots").json()[0]["is_processing"] is True  # mid-generation
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        slots = httpx.get(server.base_url + "/slots").json()
        if not slots[0]["is_processing"]:
            return
        time.sleep(0.2)
    pytest.fail("slot 0 still busy after the client disconnected")


def test_end_of_generation_token_stops(server: ServerProcess) -> None:
    """The /completions alias; a chat-formatted prompt ends on <|im_end|> (an EOG token)."""
    res = httpx.post(server.base_url + "/completions", timeout=120, json={
        "prompt": "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n",
        "n_predict": 12, "temperature": 0})
    body = res.json()
    assert body["stop_type"] == "eos" and body["stopped_eos"] is True and body["stopped_limit"] is False
    assert body["tokens_predicted"] < 12 and body["content"].startswith("Yes") and "<|im_end|>" not in body["content"]


def test_non_streaming_client_going_away_frees_the_slot(server: ServerProcess) -> None:
    import time

    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base_url + "/completion", timeout=3,
                   json={"prompt": "Count: 1, 2,", "n_predict": 2000, "ignore_eos": True, "id_slot": 1})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not httpx.get(server.base_url + "/slots").json()[1]["is_processing"]:
            return
        time.sleep(0.2)
    pytest.fail("slot 1 still busy after the client went away")


def test_long_prompt_is_tokenized_off_the_event_loop_the_same_way(server: ServerProcess) -> None:
    """A prompt over asgi.prompts.OFF_LOOP_CHARS is tokenized on a worker thread: the same
    tokens as /tokenize (which runs on the loop), here counted by the context error."""
    from asgi.prompts import OFF_LOOP_CHARS

    prompt = "The lighthouse keeper counted the waves again. " * (OFF_LOOP_CHARS // 40)
    assert len(prompt) > OFF_LOOP_CHARS
    n = len(httpx.post(server.base_url + "/tokenize", json={"content": prompt, "add_special": True},
                       timeout=60).json()["tokens"])
    res = httpx.post(server.base_url + "/completion", json={"prompt": prompt, "n_predict": 1}, timeout=60)
    assert res.status_code == 400, res.text
    err = res.json()["error"]
    assert err["type"] == "exceed_context_size_error" and err["n_prompt_tokens"] == n > 2048
