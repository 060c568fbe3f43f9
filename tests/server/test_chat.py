"""/v1/chat/completions with the openai package and raw HTTP: values, streaming, options, tools."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

from tests.server.conftest import ServerProcess, sse_events

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def client(server: ServerProcess) -> OpenAI:
    return OpenAI(api_key="sk-no-key-required", base_url=server.base_url + "/v1")


def test_chat_with_openai_client(server: ServerProcess) -> None:
    res = client(server).chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES, max_tokens=8, temperature=0)
    choice = res.choices[0]
    assert choice.message.role == "assistant" and "Paris" in (choice.message.content or "")
    assert choice.finish_reason in ("stop", "length")
    assert res.object == "chat.completion" and res.id.startswith("chatcmpl-") and res.model == "gpt-3.5-turbo"
    assert res.usage is not None and res.usage.prompt_tokens > 10
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens


def test_streaming_chat_equals_non_streaming(server: ServerProcess) -> None:
    kwargs: dict[str, Any] = {"model": "x", "messages": MESSAGES, "max_tokens": 6, "seed": 3, "temperature": 0.7}
    whole = client(server).chat.completions.create(**kwargs)
    chunks = list(client(server).chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1


def test_chat_sse_framing(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/chat/completions",
                     json={"messages": MESSAGES, "max_tokens": 2, "stream": True}, timeout=120)
    assert res.text.endswith("data: [DONE]\n\n")
    events = sse_events(res)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] and events[-2]["timings"]["predicted_n"] <= 2
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])


def test_logprobs_and_n(server: ServerProcess) -> None:
    res = client(server).chat.completions.create(model="x", messages=MESSAGES, max_tokens=3, temperature=0,
                                                 logprobs=True, top_logprobs=2)
    content = res.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 3
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    two = client(server).chat.completions.create(model="x", messages=MESSAGES, max_tokens=2, n=2, seed=5)
    assert [c.index for c in two.choices] == [0, 1]


def test_stop_and_max_completion_tokens(server: ServerProcess) -> None:
    res = client(server).chat.completions.create(model="x", messages=MESSAGES, max_completion_tokens=12,
                                                 temperature=0, stop=["Paris"])
    assert "Paris" not in (res.choices[0].message.content or "") and res.choices[0].finish_reason == "stop"


def test_llama_cpp_extras_pass_through(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 2, "mirostat": 2, "mirostat_tau": 3.0, "top_k": 3}, timeout=120)
    assert res.status_code == 200 and res.json()["choices"][0]["message"]["content"]


def test_developer_role_and_typed_content(server: ServerProcess) -> None:
    res = httpx.post(server.base_url + "/apply-template", json={"messages": [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert res.json()["prompt"].startswith("<|im_start|>system\nRules.<|im_end|>\n<|im_start|>user\na\nb<|im_end|>")


def test_tools_generic_format(server: ServerProcess) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    prompt = httpx.post(server.base_url + "/apply-template", json={"messages": MESSAGES, "tools": tools}).json()["prompt"]
    assert "get_weather" in prompt and "Respond in JSON format" in prompt
    named = httpx.post(server.base_url + "/apply-template", json={
        "messages": MESSAGES, "tools": [*tools, {"type": "function", "function": {"name": "other"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}).json()["prompt"]
    assert "get_weather" in named and '"other"' not in named
    missing = httpx.post(server.base_url + "/apply-template", json={
        "messages": MESSAGES, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert missing.status_code == 400 and "nope" in missing.json()["error"]["message"]
    # The reply side, without the cost of a grammar-constrained generation: what the route
    # builds from a finished generic-format reply (the streamed test below runs the model).
    from asgi.chat_reply import whole_reply
    from asgi.responses import chat_message
    from pyllama.chat import ChatPrompt

    generic = ChatPrompt(prompt="", format="Generic", parse_tool_calls=True)
    parsed = whole_reply(generic, "deepseek", '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}')
    message = chat_message(parsed.content, parsed.tool_calls)
    assert message["content"] is None and message["role"] == "assistant"
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and len(call["id"]) == 32
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"messages": "hi"}, "Expected 'messages' to be an array"),
        ({}, "'messages' is required"),
        ({"messages": [{"role": "user"}]}, "must contain 'content'"),
        ({"messages": MESSAGES, "max_tokens": -7}, "Field 'max_tokens'"),
        ({"messages": MESSAGES, "response_format": {"type": "xml"}}, "response_format type"),
        ({"messages": MESSAGES, "top_logprobs": 2}, "requires logprobs"),
        ({"messages": MESSAGES, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": MESSAGES, "samplers": ["bogus"]}, "unknown sampler"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "not supported"),
    ],
)
def test_bad_chat_requests(server: ServerProcess, body: dict[str, Any], message: str) -> None:
    res = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert res.status_code == 400, res.text
    assert message in res.json()["error"]["message"] and res.json()["error"]["type"] == "invalid_request_error"


def test_openai_client_sees_errors(server: ServerProcess) -> None:
    with pytest.raises(BadRequestError) as info:
        client(server).chat.completions.create(model="x", messages=MESSAGES, max_tokens=-3)
    assert info.value.status_code == 400


def test_response_format_json_schema(server: ServerProcess) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
    res = client(server).chat.completions.create(
        model="x", messages=MESSAGES, max_tokens=24, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    answer = json.loads(res.choices[0].message.content or "")
    assert isinstance(answer["city"], str) and len(answer["city"]) <= 12


def test_streamed_tool_call_deltas(server: ServerProcess) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                           "required": ["zone"]}}}]
    chunks = list(client(server).chat.completions.create(
        model="x", temperature=0, max_tokens=40, tools=tools, tool_choice="required", stream=True,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}]))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function is not None and calls[0].function.name == "get_time"
    assert "zone" in json.loads(calls[0].function.arguments or "{}") and calls[0].id
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
