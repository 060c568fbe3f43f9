"""The other vendors' APIs on the chat path: Anthropic Messages, OpenAI Responses, Vertex AI,
and reasoning models, with the real clients (anthropic, openai), httpx streaming and curl.

Each route translates into a chat request, so at temperature 0 its text must equal
/v1/chat/completions' for the same conversation: that is what most tests check, besides
the shapes the clients parse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from openai import OpenAI

from tests.server.conftest import ServerProcess, start

SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"
TEMPLATES = Path(__file__).parents[1] / "chat" / "templates"
GREEDY = {"temperature": 0}  # this anthropic client version has no `temperature` argument


def chat_text(server: ServerProcess, max_tokens: int = 6) -> str:
    res = httpx.post(server.base_url + "/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens, "temperature": 0})
    assert res.status_code == 200, res.text
    return str(res.json()["choices"][0]["message"]["content"])


def claude(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-no-key-required", base_url=server.base_url, timeout=300)


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), block
        out.append((name[len("event: "):], json.loads(data[len("data: "):])))
    return out


# -- Anthropic Messages ---------------------------------------------------------------


def test_anthropic_client_message_equals_chat(server: ServerProcess) -> None:
    msg = claude(server).messages.create(model="claude-test", max_tokens=6, extra_body=GREEDY, system=SYSTEM,
                                         messages=[{"role": "user", "content": QUESTION}])
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.model == "claude-test" and msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.content[0].type == "text" and msg.content[0].text == chat_text(server)
    assert msg.usage.output_tokens > 0 and msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 10


def test_anthropic_client_stream_equals_message(server: ServerProcess) -> None:
    kwargs: dict[str, Any] = {"model": "x", "max_tokens": 6, "extra_body": GREEDY, "system": SYSTEM,
                              "messages": [{"role": "user", "content": QUESTION}]}
    whole = claude(server).messages.create(**kwargs)
    with claude(server).messages.stream(**kwargs) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == whole.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_count_tokens_matches_chat_input_tokens(server: ServerProcess) -> None:
    count = claude(server).messages.count_tokens(model="x", system=SYSTEM,
                                                 messages=[{"role": "user", "content": QUESTION}])
    chat = httpx.post(server.base_url + "/v1/chat/completions/input_tokens", json={
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]}).json()
    assert count.input_tokens == chat["input_tokens"] > 10
    assert chat["object"] == "response.input_tokens"


def test_anthropic_tool_use_and_result_render_as_chat_turns(server: ServerProcess) -> None:
    tool = {"name": "get_weather", "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "I should call the tool."},
                                          {"type": "tool_use", "id": "t1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Here:"},
                                     {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny, 25C"}]},
    ]
    chat_messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
         "tool_calls": [{"id": "t1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "user", "content": [{"type": "text", "text": "Here:"}]},
        {"role": "tool", "tool_call_id": "t1", "content": "Sunny, 25C"},
    ]
    chat_tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                    "parameters": tool["input_schema"]}}]
    ours = httpx.post(server.base_url + "/v1/messages/count_tokens", json={"messages": turns, "tools": [tool]})
    theirs = httpx.post(server.base_url + "/v1/chat/completions/input_tokens",
                        json={"messages": chat_messages, "tools": chat_tools})
    assert ours.status_code == 200 and ours.json()["input_tokens"] == theirs.json()["input_tokens"]
    reply = claude(server).messages.create(model="x", max_tokens=3, messages=turns)  # type: ignore[arg-type]
    assert reply.content and reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_anthropic_stream_events_with_httpx(server: ServerProcess) -> None:
    with httpx.stream("POST", server.base_url + "/v1/messages", timeout=300, json={
            "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}) as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        events = named_events(res.read().decode())
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    starts = [d["index"] for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == stops == [0]
    assert events[-2][1]["usage"]["output_tokens"] == 4 and events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert all("timings" not in d for _, d in events)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_anthropic_with_curl(server: ServerProcess) -> None:
    body = json.dumps({"max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    out = subprocess.run(["curl", "-sN", server.base_url + "/v1/messages", "-H", "content-type: application/json",
                          "-d", body], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.startswith("event: message_start\n") and out.endswith("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")


@pytest.mark.parametrize("body, status, needle", [
    ({"max_tokens": 5}, 400, "'messages' is required"),
    ({"messages": "hi"}, 400, "'messages' must be an array"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                                "data": "iVBORw0KGgo="}}]}]},
     400, "image input is not supported"),
    ({"messages": [], "system": 7}, 400, "'system'"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": 5}]}]}, 400, "'id'"),
])
def test_anthropic_bad_requests(server: ServerProcess, body: dict[str, Any], status: int, needle: str) -> None:
    res = httpx.post(server.base_url + "/v1/messages", json=body)
    assert res.status_code == status and needle in res.json()["error"]["message"], res.text


# -- OpenAI Responses ------------------------------------------------------------------


def oai(server: ServerProcess) -> OpenAI:
    return OpenAI(api_key="sk-no-key-required", base_url=server.base_url + "/v1", timeout=300)


def test_responses_with_openai_client_equals_chat(server: ServerProcess) -> None:
    res = oai(server).responses.create(model="gpt-4.1", instructions=SYSTEM, input=QUESTION, max_output_tokens=6,
                                       temperature=0)
    assert res.id.startswith("resp_") and res.status == "completed" and res.model == "gpt-4.1"
    assert res.output[0].id.startswith("msg_") and res.output[0].type == "message"
    assert res.output_text == chat_text(server)
    assert res.usage is not None and res.usage.output_tokens > 0
    assert res.usage.total_tokens == res.usage.input_tokens + res.usage.output_tokens


def test_responses_stream_with_openai_client(server: ServerProcess) -> None:
    stream = oai(server).responses.create(model="x", input=[{"role": "system", "content": SYSTEM},
                                                            {"role": "user", "content": QUESTION}],
                                          max_output_tokens=6, temperature=0, stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1].response  # type: ignore[union-attr]
    assert text == completed.output_text == chat_text(server)


def test_responses_input_items_and_input_tokens(server: ServerProcess) -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
    ]
    ours = httpx.post(server.base_url + "/v1/responses/input_tokens", json={"input": items, "instructions": "Be brief"})
    chat = httpx.post(server.base_url + "/v1/chat/completions/input_tokens", json={"messages": [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}]})
    assert ours.status_code == 200 and ours.json() == chat.json()


def test_responses_telemetry_stream_with_httpx(server: ServerProcess) -> None:
    with httpx.stream("POST", server.base_url + "/responses", timeout=300, json={
            "input": "Hello", "max_output_tokens": 3, "stream": True, "timings_per_token": True,
            "return_progress": True}) as res:
        events = named_events(res.read().decode())
    progress = [d for _, d in events if "prompt_progress" in d]
    assert progress and progress[0]["type"] == "response.in_progress" and progress[0]["prompt_progress"]["total"] > 0
    assert any("timings" in d for n, d in events if n == "response.output_text.delta")
    assert events[-1][0] == "response.completed" and "timings" in events[-1][1]


@pytest.mark.parametrize("body, needle", [
    ({}, "'input' is required"),
    ({"input": 5}, "'input' must be a string or array"),
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": [{"type": "mystery"}]}, "Cannot determine type of 'item'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input_file"),
    ({"input": "hi", "tools": {"a": 1}}, "'tools' must be an array"),
])
def test_responses_bad_requests(server: ServerProcess, body: dict[str, Any], needle: str) -> None:
    for path in ("/v1/responses", "/v1/responses/input_tokens"):
        res = httpx.post(server.base_url + path, json=body)
        assert res.status_code == 400 and needle in res.json()["error"]["message"], res.text


# -- reasoning and Vertex AI -------------------------------------------------------------


@pytest.fixture(scope="module")
def r1_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    """SmolLM2 wearing DeepSeek R1's template (the prompt opens <think>), Vertex AI mode on."""
    template = TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
    yield from start(["-m", str(smollm2_path), "-c", "1024", "--chat-template-file", str(template),
                      "--reasoning-format", "deepseek"], "r1", {"AIP_MODE": "PREDICTION"})


def test_reasoning_content_from_an_opened_think_block(r1_server: ServerProcess) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    res = httpx.post(r1_server.base_url + "/v1/chat/completions", json=body, timeout=300).json()
    message = res["choices"][0]["message"]
    # The prompt ends with "<think>\n": four tokens in, the model is still thinking.
    assert message["reasoning_content"] and message["content"] == ""
    raw = httpx.post(r1_server.base_url + "/v1/chat/completions", json={**body, "reasoning_format": "none"},
                     timeout=300).json()["choices"][0]["message"]
    assert "reasoning_content" not in raw and raw["content"].strip() == message["reasoning_content"].strip()
    with httpx.stream("POST", r1_server.base_url + "/v1/chat/completions", json={**body, "stream": True},
                      timeout=300) as stream:
        chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    assert streamed == message["reasoning_content"]
    thinking = claude(r1_server).messages.create(model="x", max_tokens=4, extra_body=GREEDY,
                                                 messages=[{"role": "user", "content": "Hi"}])
    assert thinking.content[0].type == "thinking" and thinking.content[0].thinking == message["reasoning_content"]


def test_thinking_off_closes_the_block(r1_server: ServerProcess) -> None:
    def prompt(**extra: Any) -> str:
        res = httpx.post(r1_server.base_url + "/apply-template",
                         json={"messages": [{"role": "user", "content": "Hi"}], **extra})
        assert res.status_code == 200, res.text
        return str(res.json()["prompt"])

    assert prompt().endswith("<think>\n")
    assert prompt(chat_template_kwargs={"enable_thinking": False}).endswith("<think>\n</think>")
    assert prompt(reasoning_effort="none").endswith("<think>\n</think>")
    bad = httpx.post(r1_server.base_url + "/apply-template", json={
        "messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {"enable_thinking": "no"}})
    assert bad.status_code == 400 and "enable_thinking" in bad.json()["error"]["message"]


def test_vertex_predict_dispatches_instances(r1_server: ServerProcess) -> None:
    res = httpx.post(r1_server.base_url + "/predict", timeout=300, json={"instances": [
        {"@requestFormat": "applyTemplate", "messages": [{"role": "user", "content": "Hi"}]},
        {"@requestFormat": "/tokenize", "content": "Hello"},
        {"@requestFormat": "nope"},
        "not an object",
    ]})
    assert res.status_code == 200
    first, second, third, fourth = res.json()["predictions"]
    assert first["prompt"].endswith("<think>\n") and second["tokens"]
    assert "no handler registered" in third["error"]["message"] and "JSON object" in fourth["error"]["message"]
    assert httpx.post(r1_server.base_url + "/predict", json={"instances": 3}).status_code == 400


def test_reasoning_flags(smollm2_path: Path) -> None:
    from asgi.settings import SettingsError, parse_settings

    s = parse_settings(["-m", str(smollm2_path), "-rea", "off", "--reasoning-format", "none",
                        "--reasoning-budget", "0", "--chat-template-kwargs", '{"x": 1}'], {})
    assert (s.reasoning.mode, s.reasoning.format, s.reasoning.budget) == ("off", "none", 0)
    assert s.chat_template_kwargs == {"x": 1, "enable_thinking": False}
    env = parse_settings(["-m", str(smollm2_path)], {"LLAMA_ARG_REASONING": "on", "LLAMA_ARG_THINK": "deepseek"})
    assert (env.reasoning.mode, env.reasoning.format) == ("on", "deepseek")
    for argv, needle in ((["--reasoning", "maybe"], "--reasoning"), (["--reasoning-format", "xml"], "--reasoning-format"),
                         (["--reasoning-budget", "-2"], "--reasoning-budget"),
                         (["--chat-template-kwargs", "[1]"], "JSON object")):
        with pytest.raises(SettingsError, match=needle):
            parse_settings(["-m", str(smollm2_path), *argv], {})
