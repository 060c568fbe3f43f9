"""/openapi.json against the validators it describes.

The completion fields are generated from asgi.params' own tables; the other bodies are
written by hand. Either way the document must not drift from the code, so: every field
params.py reads is documented, every documented field refuses a value of the wrong type
(and out-of-range values where the document states a hard limit), the bodies are valid
JSON Schema, and the example bodies the fuzz test starts from conform to them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from asgi.errors import BadRequest
from asgi.openapi import completion_fields, request_bodies
from asgi.params import RequestLimits, parse_completion_params
from pyllama.errors import InvalidRequestError
from tests.server.conftest import REPO, ServerProcess
from tests.server.test_reliability_traffic import BASE_BODIES

LIMITS = RequestLimits()
# Read leniently on purpose, as llama-server does: a single-model server ignores "model";
# "prompt" is checked by the route (tokenize_prompts), not here; stream_options that is
# not an object is ignored.
LENIENT = {"model", "prompt", "stream_options"}


def _types(schema: dict[str, Any]) -> set[str]:
    if "anyOf" in schema:
        return {t for s in schema["anyOf"] for t in _types(s)}
    return {schema["type"]} if "type" in schema else set()


# (value, the JSON types it belongs to): the first whose types the schema does not allow
CANDIDATES: list[tuple[Any, set[str]]] = [("seven", {"string"}), (12345, {"integer", "number"}),
                                          (True, {"boolean"}), ([7], {"array"}), ({"x": 1}, {"object"})]


def wrong_value(schema: dict[str, Any]) -> Any:
    allowed = _types(schema)
    for value, kinds in CANDIDATES:
        if not kinds & allowed:
            return value
    raise AssertionError(f"no wrong type for {schema}")


def parse(body: dict[str, Any]) -> None:
    parse_completion_params(body, defaults={}, n_vocab=1000, n_parallel=4, tokenize=lambda t: [1], limits=LIMITS)


def test_every_field_params_reads_is_documented() -> None:
    source = (REPO / "asgi" / "params.py").read_text()
    read = set(re.findall(r'body\.get\("(\w+)"\)', source)) | set(re.findall(r'body\["(\w+)"\]', source))
    for group in re.findall(r"_pick\(body, ([^)]*)\)", source):
        read |= set(re.findall(r'"(\w+)"', group))
    documented = set(completion_fields(LIMITS))
    assert read and read <= documented, read - documented


@pytest.mark.parametrize("name", sorted(set(completion_fields(LIMITS)) - LENIENT))
def test_documented_completion_field_refuses_the_wrong_type(name: str) -> None:
    schema = completion_fields(LIMITS)[name]
    with pytest.raises((BadRequest, InvalidRequestError)):  # both are a 400 (the app maps them)
        parse({name: wrong_value(schema)})
    if "minimum" in schema and isinstance(schema["minimum"], int):
        with pytest.raises(BadRequest):
            parse({name: schema["minimum"] - 1})
    if "maximum" in schema:
        with pytest.raises(BadRequest):
            parse({name: schema["maximum"] + 1})
    if name == "stop":
        with pytest.raises(BadRequest):
            parse({name: ["s"] * (LIMITS.stop_count + 1)})


def test_bodies_are_json_schema_and_the_examples_conform() -> None:
    bodies = request_bodies(LIMITS)
    for schema in bodies.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    by_path = {"/completion": "completions.completion", "/v1/completions": "completions.oai_completions",
               "/infill": "completions.infill", "/v1/chat/completions": "chat.chat_completions",
               "/apply-template": "tokens.apply_template", "/tokenize": "tokens.tokenize",
               "/detokenize": "tokens.detokenize", "/embedding": "embeddings.embeddings_native",
               "/v1/embeddings": "embeddings.embeddings_oai", "/props": "meta.post_props",
               "/slots/{id_slot}": "meta.slot_action", "/v1/messages": "anthropic.messages",
               "/v1/messages/count_tokens": "anthropic.count_tokens", "/v1/responses": "responses.responses",
               "/v1/responses/input_tokens": "responses.responses_input_tokens",
               "/v1/chat/completions/input_tokens": "responses.chat_input_tokens", "/v1/rerank": "rerank.rerank",
               "/v1/chat/completions/control": "chat.chat_control"}
    for path, endpoint in by_path.items():
        jsonschema.validate(BASE_BODIES[path], bodies[endpoint])


# Fields of the hand-written bodies, checked over HTTP against the main test server.
HTTP_FIELDS = {
    "/tokenize": ("tokens.tokenize", {"content": "hi"}, ["content", "add_special", "parse_special", "with_pieces"]),
    "/detokenize": ("tokens.detokenize", {"tokens": [1]}, ["tokens"]),
    "/v1/embeddings": ("embeddings.embeddings_oai", {"input": "hi"}, ["input", "encoding_format", "embd_normalize"]),
    "/apply-template": ("tokens.apply_template", {"messages": [{"role": "user", "content": "hi"}]},
                        ["messages", "tools", "tool_choice", "response_format", "chat_template_kwargs",
                         "add_generation_prompt"]),
    "/v1/chat/completions": ("chat.chat_completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                             ["messages", "logprobs", "top_logprobs", "response_format"]),
    "/v1/messages/count_tokens": ("anthropic.count_tokens", {"messages": [{"role": "user", "content": "hi"}]},
                                  ["messages", "system", "tools", "chat_template_kwargs", "thinking"]),
    "/v1/responses/input_tokens": ("responses.responses_input_tokens", {"input": "hi"},
                                   ["input", "instructions", "tools"]),
}


def test_hand_written_fields_refuse_the_wrong_type(server: ServerProcess) -> None:
    bodies = request_bodies(LIMITS)
    for path, (endpoint, base, names) in HTTP_FIELDS.items():
        props = bodies[endpoint]["properties"]
        ok = httpx.post(server.base_url + path, json=base, timeout=60)
        assert ok.status_code == 200, (path, ok.text)
        for name in names:
            value = wrong_value(props[name])
            res = httpx.post(server.base_url + path, json={**base, name: value}, timeout=60)
            assert res.status_code == 400, (path, name, value, res.status_code, res.text[:200])
            enum = props[name].get("enum")
            if enum:
                res = httpx.post(server.base_url + path, json={**base, name: "not-a-member"}, timeout=60)
                assert res.status_code == 400, (path, name, "enum", res.text[:200])


def test_served_document_matches(server: ServerProcess) -> None:
    doc = httpx.get(server.base_url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/v1/chat/completions"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == request_bodies(LIMITS)["chat.chat_completions"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "post":
                kind = "array" if path == "/lora-adapters" else "object"  # llama-server's body is a list
                assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == kind, path
    assert Path(REPO / "asgi" / "openapi.py").is_file()
