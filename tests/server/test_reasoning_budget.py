"""`--reasoning-budget N` and the per-request budget fields on a real server: SmolLM2 with
a thinking template (its generation prompt opens `<think>`), greedy decoding. After N
thinking tokens (the newline the prompt put after `<think>` counts, as in llama.cpp) the
end tag is forced, with `reasoning_budget_message` in front of it when there is one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess

TEMPLATE = """{%- for m in messages -%}
<|im_start|>{{ m.role }}
{% if m.reasoning_content %}<think>
{{ m.reasoning_content }}
</think>
{% endif %}{{ m.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is not defined or enable_thinking %}<think>
{% endif %}
{%- endif -%}"""

END_TOKENS = ["</", "think", ">"]  # SmolLM2 has no special token for the tag


@pytest.fixture(scope="module")
def srv(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    template = tmp_path_factory.mktemp("think") / "think.jinja"
    template.write_text(TEMPLATE)
    server = ServerProcess(["-m", str(smollm2_path), "-c", "1024", "-np", "1", "--chat-template-file", str(template),
                            "--reasoning-budget", "5"], log_name="budget")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def chat(srv: ServerProcess, **extra: Any) -> dict[str, Any]:
    body = {"max_tokens": 24, "temperature": 0, "logprobs": True, "reasoning_format": "none",
            "messages": [{"role": "user", "content": "What is 2+2? Think about it."}], **extra}
    r = httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def tokens_of(answer: dict[str, Any]) -> list[str]:
    return [t["token"] for t in answer["choices"][0]["logprobs"]["content"]]


def thinking_tokens(tokens: list[str]) -> int:
    """How many tokens came before the end tag."""
    for i in range(len(tokens) - 2):
        if tokens[i:i + 3] == END_TOKENS:
            return i
    raise AssertionError(f"no end tag in {tokens}")


def test_the_flag_budget_forces_the_end_tag(srv: ServerProcess) -> None:
    tokens = tokens_of(chat(srv))
    assert thinking_tokens(tokens) == 4  # 5, less the prompt's newline after <think>


def test_a_larger_budget_thinks_the_same_tokens_longer(srv: ServerProcess) -> None:
    short, long = tokens_of(chat(srv)), tokens_of(chat(srv, reasoning_budget_tokens=12))
    assert long[:4] == short[:4]
    assert long[4:7] != END_TOKENS  # not forced there any more
    if END_TOKENS[0] in long:
        assert thinking_tokens(long) <= 11


@pytest.mark.parametrize("field,value,expected", [("reasoning_budget_tokens", 2, 1), ("thinking_budget_tokens", 3, 2),
                                                  ("reasoning_budget_tokens", -1, 4)])
def test_the_request_fields_override_the_flag(srv: ServerProcess, field: str, value: int, expected: int) -> None:
    assert thinking_tokens(tokens_of(chat(srv, **{field: value}))) == expected


def test_the_message_comes_before_the_forced_end_tag(srv: ServerProcess) -> None:
    answer = chat(srv, reasoning_budget_tokens=3, reasoning_format="deepseek", logprobs=False,
                  reasoning_budget_message=" Time is up.")
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"].endswith("Time is up.")
    raw = chat(srv, reasoning_budget_tokens=3, reasoning_budget_message=" Time is up.")
    assert "Time is up.</think>" in raw["choices"][0]["message"]["content"]


def test_streaming_is_forced_the_same_way(srv: ServerProcess) -> None:
    whole = chat(srv, reasoning_format="deepseek", logprobs=False)["choices"][0]["message"]
    body = {"max_tokens": 24, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "What is 2+2? Think about it."}]}
    r = httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=120)
    reasoning = content = ""
    for block in r.text.split("\n\n"):
        if block.startswith("data: {"):
            for choice in json.loads(block[6:])["choices"]:
                reasoning += choice["delta"].get("reasoning_content") or ""
                content += choice["delta"].get("content") or ""
    assert reasoning == whole["reasoning_content"] and content == whole["content"]


def test_no_budget_when_thinking_is_off(srv: ServerProcess) -> None:
    tokens = tokens_of(chat(srv, chat_template_kwargs={"enable_thinking": False}, max_tokens=10))
    assert "".join(tokens[:7]).find("</think>") < 0


def test_completion_takes_the_raw_fields(srv: ServerProcess) -> None:
    body = {"prompt": "Question: what is 2+2?\nAnswer: <think>", "n_predict": 12, "temperature": 0, "n_probs": 1,
            "reasoning_budget_tokens": 2, "reasoning_budget_start_tag": "<think>",
            "reasoning_budget_end_tag": "</think>", "generation_prompt": "<think>"}
    r = httpx.post(srv.base_url + "/completion", json=body, timeout=120)
    assert r.status_code == 200, r.text
    tokens = [p["token"] for p in r.json()["completion_probabilities"]]
    assert thinking_tokens(tokens) == 2
    # without the start tag in the prompt or the output the budget never starts
    plain = httpx.post(srv.base_url + "/completion", json={**body, "generation_prompt": ""}, timeout=120).json()
    assert "</think>" not in plain["content"][:12]


@pytest.mark.parametrize("field,value", [("reasoning_budget_tokens", "five"), ("reasoning_budget_tokens", -2),
                                         ("thinking_budget_tokens", 1.5), ("reasoning_budget_message", 3),
                                         ("reasoning_budget_end_tags", "</think>")])
def test_bad_budget_fields_are_400(srv: ServerProcess, field: str, value: Any) -> None:
    body = {"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], field: value}
    r = httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=60)
    if field == "reasoning_budget_end_tags":  # a chat request's tags come from its template
        assert r.status_code == 200
        r = httpx.post(srv.base_url + "/completion", json={"prompt": "hi", "n_predict": 2, field: value}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("template", ["Qwen-QwQ-32B.jinja"])
def test_llama_cpp_thinking_templates(smollm2_path: Path, template: str) -> None:
    """A llama.cpp template whose generation prompt opens the block: the budget ends it.

    As in llama.cpp the tags are matched as token sequences. DeepSeek R1's prompt ends
    `<｜Assistant｜><think>`, which SmolLM2's BPE splits as `><` `think` `>`: the tag's own
    tokens (`<` `think` `>`) never appear, so the budget cannot start there with this model
    (with R1's own vocabulary `<think>` is one token). Qwen 3 opens no block when thinking:
    the model writes `<think>` itself, which SmolLM2 does not."""
    path = Path(__file__).resolve().parents[1] / "chat" / "templates" / template
    server = ServerProcess(["-m", str(smollm2_path), "-c", "1024", "-np", "1", "--chat-template-file", str(path)],
                           log_name="budget-family")
    try:
        server.wait_ready()
        prompt = httpx.post(server.base_url + "/apply-template",
                            json={"messages": [{"role": "user", "content": "hi"}]}, timeout=60).json()["prompt"]
        assert prompt.rstrip().endswith("<think>")
        tokens = tokens_of(chat(server, reasoning_budget_tokens=4))
        opened_with_newline = prompt.endswith("<think>\n")
        assert thinking_tokens(tokens) == (3 if opened_with_newline else 4)
        answer = chat(server, reasoning_budget_tokens=4, reasoning_format="deepseek", logprobs=False)
        assert answer["choices"][0]["message"]["reasoning_content"]
        assert "</think>" not in answer["choices"][0]["message"]["content"]
    finally:
        server.stop()
