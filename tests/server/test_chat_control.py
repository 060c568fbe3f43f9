"""POST /v1/chat/completions/control on a live stream (llama-server's post_control).

SmolLM2 with a thinking template whose generation prompt opens `<think>`; greedy, it never
closes the block on its own in 60 tokens. A client streaming with `reasoning_control: true`
sends `reasoning_end` (by the completion id of the chunks) after a few tokens: the end tag
is forced right there and the model goes on to answer, while the uncontrolled reply is
the same text up to that point and no end tag.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess
from tests.server.test_reasoning_budget import TEMPLATE

QUESTION = [{"role": "user", "content": "Write a long story about a dragon. Think carefully first."}]
CONTROL = "/v1/chat/completions/control"


@pytest.fixture(scope="module")
def srv(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    template = tmp_path_factory.mktemp("control") / "think.jinja"
    template.write_text(TEMPLATE)
    server = ServerProcess(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "--chat-template-file", str(template)],
                           log_name="control")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def stream_with_control(srv: ServerProcess, after: int, **extra: Any) -> tuple[str, str, dict[str, Any]]:
    """Stream a reply; after `after` content pieces, send reasoning_end. (text, id, control answer)"""
    body = {"messages": QUESTION, "max_tokens": 60, "temperature": 0, "reasoning_format": "none", "stream": True,
            **extra}
    text, cmpl_id, answer = "", "", None
    n = 0
    with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            cmpl_id = chunk["id"]
            for choice in chunk["choices"]:
                piece = choice["delta"].get("content") or ""
                text += piece
                n += bool(piece)
            if n >= after and answer is None:
                res = httpx.post(srv.base_url + CONTROL, json={"id": cmpl_id, "action": "reasoning_end"}, timeout=60)
                assert res.status_code == 200, res.text
                answer = res.json()
    assert answer is not None
    return text, cmpl_id, answer


def test_reasoning_end_forces_the_end_tag_mid_stream(srv: ServerProcess) -> None:
    plain = httpx.post(srv.base_url + "/v1/chat/completions", timeout=120, json={
        "messages": QUESTION, "max_tokens": 60, "temperature": 0, "reasoning_format": "none"}).json()
    uncontrolled = plain["choices"][0]["message"]["content"]
    assert "</think>" not in uncontrolled
    text, cmpl_id, answer = stream_with_control(srv, 4, reasoning_control=True)
    assert cmpl_id.startswith("chatcmpl-")
    assert answer == {"success": True}
    head, sep, tail = text.partition("</think>")
    assert sep, text  # forced while the stream ran
    assert uncontrolled.startswith(head) and len(head) < len(uncontrolled)
    assert tail.strip()  # the model went on to answer after the forced tag
    # the completion is over now: its id matches nothing
    res = httpx.post(srv.base_url + CONTROL, json={"id": cmpl_id, "action": "reasoning_end"}, timeout=60)
    assert res.json() == {"success": False, "message": "no active completion for this id"}


def test_reasoning_end_on_a_completion_not_armed(srv: ServerProcess) -> None:
    text, _, answer = stream_with_control(srv, 2, max_tokens=12)
    assert answer == {"success": False, "message": "reasoning control not enabled for this completion"}
    assert "</think>" not in text


def test_the_deepseek_format_splits_at_the_forced_tag(srv: ServerProcess) -> None:
    body = {"messages": QUESTION, "max_tokens": 40, "temperature": 0, "stream": True, "reasoning_control": True}
    reasoning = content = ""
    sent = False
    with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    reasoning += choice["delta"].get("reasoning_content") or ""
                    content += choice["delta"].get("content") or ""
                if reasoning and not sent:
                    sent = httpx.post(srv.base_url + CONTROL, json={"id": chunk["id"], "action": "reasoning_end"},
                                      timeout=60).json()["success"]
    assert sent and reasoning and content.strip()
    assert "</think>" not in reasoning + content


@pytest.mark.parametrize(("body", "message"), [
    ({"action": "reasoning_end"}, "missing completion id"),
    ({"id": "", "action": "reasoning_end"}, "missing completion id"),
    ({"id": 7, "action": "reasoning_end"}, "missing completion id"),
    ({"id": "chatcmpl-x"}, "unknown control action"),
    ({"id": "chatcmpl-x", "action": "inject"}, "unknown control action"),
])
def test_bad_requests_are_400(srv: ServerProcess, body: dict[str, Any], message: str) -> None:
    res = httpx.post(srv.base_url + CONTROL, json=body, timeout=60)
    assert res.status_code == 400
    assert res.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}
    assert httpx.post(srv.base_url + CONTROL, content=b"[1]", timeout=60).status_code == 400


def test_an_unknown_id_with_curl(srv: ServerProcess) -> None:
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", srv.base_url + CONTROL, "-H",
                          "Content-Type: application/json", "-d", '{"id": "chatcmpl-nope", "action": "reasoning_end"}'],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body) == {"success": False, "message": "no active completion for this id"}


def test_a_wrong_type_reasoning_control_is_400(srv: ServerProcess) -> None:
    res = httpx.post(srv.base_url + "/v1/chat/completions", timeout=60,
                     json={"messages": QUESTION, "max_tokens": 1, "reasoning_control": "yes"})
    assert res.status_code == 400
    res = httpx.post(srv.base_url + "/completion", timeout=60, json={"prompt": "hi", "n_predict": 1,
                                                                      "reasoning_control": 1})
    assert res.status_code == 400


def test_a_text_completion_with_the_raw_tags(srv: ServerProcess) -> None:
    """As in llama-server every completion has an id the control route finds: /v1/completions
    with llama-server's raw budget fields and reasoning_control, ended by its streamed id."""
    body = {"prompt": "<|im_start|>user\nWrite a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n<think>\n",
            "max_tokens": 40, "temperature": 0, "stream": True, "reasoning_control": True,
            "reasoning_budget_start_tag": "<think>", "reasoning_budget_end_tag": "</think>",
            "generation_prompt": "<think>\n"}
    text, answer = "", None
    with httpx.stream("POST", srv.base_url + "/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text += "".join(c.get("text") or "" for c in chunk["choices"])
                if text.strip() and answer is None:
                    answer = httpx.post(srv.base_url + CONTROL, json={"id": chunk["id"], "action": "reasoning_end"},
                                        timeout=60).json()
    assert answer == {"success": True}
    assert "</think>" in text
