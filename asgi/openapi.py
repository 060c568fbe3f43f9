"""GET /openapi.json: the routes, built from the app's own url_map, and their request bodies.

The completion fields come from the tables the request is validated with (the sampling
table pyllama.sampling.fields.FIELDS and asgi.params.OTHER_FIELDS), so a field added there
is documented here. The other bodies are
written out below; tests/server/test_reliability_openapi.py feeds every documented field a
value of the wrong type and checks the validators refuse it, and checks that every route
the app serves appears here, so the document and the code cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
import re
from typing import Any

from quart import Quart, Response

from asgi.openapi_compat import compat_bodies
from asgi.params import OTHER_FIELDS, RequestLimits
from pyllama import __version__
from pyllama.sampling.fields import FIELDS, INT_MAX, Field

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "type"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "type": {"type": "string"}},
        }
    },
}

PROMPT: dict[str, Any] = {
    "description": "a string, token ids, a mix of both, {\"prompt_string\": ...}, or a list of those (several prompts)",
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "object"},
                                               {"type": "array"}]}},
        {"type": "object", "properties": {"prompt_string": {"type": "string"}}},
    ],
}


def _number_schema(kind: str, limits: tuple[float, float] | None, hard: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if kind == "int" else "number"}
    if limits is not None:
        lo, hi = limits
        # hard limits reject; soft ones clamp (documented, but both ends are accepted)
        key_lo, key_hi = ("minimum", "maximum") if hard else ("x-clamp-minimum", "x-clamp-maximum")
        if math.isfinite(lo):
            schema[key_lo] = int(lo) if kind == "int" else lo
        if math.isfinite(hi) and hi < INT_MAX:
            schema[key_hi] = int(hi) if kind == "int" else hi
    return schema


def sampling_schema(f: Field, limits: RequestLimits) -> dict[str, Any]:
    """One sampling table field as a JSON schema property."""
    if f.kind == "bool":
        schema: dict[str, Any] = {"type": "boolean"}
    elif f.kind == "samplers":
        schema = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    elif f.kind == "strings":
        schema = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    elif f.kind == "logit_bias":
        schema = {"anyOf": [{"type": "array", "maxItems": limits.logit_bias},
                            {"type": "object", "maxProperties": limits.logit_bias}]}
    elif f.limits is not None:
        schema = _number_schema("int" if f.kind == "seed" else f.kind, f.limits, True)
    else:
        schema = _number_schema("int" if f.kind == "seed" else f.kind, f.clamp, False)
    return {**schema, "description": f.help}


def completion_fields(limits: RequestLimits) -> dict[str, Any]:
    """Every field /completion reads (chat and /v1/completions read the same ones)."""
    props: dict[str, Any] = {"prompt": PROMPT, "model": {"type": "string"}}
    for f in FIELDS:
        for name in (f.name, *f.aliases):
            props[name] = sampling_schema(f, limits)
    props["n_probs"]["maximum"] = limits.n_probs
    for name, schema in OTHER_FIELDS.items():
        props[name] = dict(schema)
    props["stop"] = {"anyOf": [{"type": "string", "maxLength": limits.stop_length},
                               {"type": "array", "maxItems": limits.stop_count,
                                "items": {"type": "string", "maxLength": limits.stop_length}}]}
    props["grammar"] = {"type": "string", "description": f"GBNF, at most {limits.grammar_bytes} bytes"}
    return props


def _object(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


MESSAGE = _object({
    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}]},
    "name": {"type": "string"},
    "tool_calls": {"type": "array"},
    "tool_call_id": {"type": "string"},
}, ["role"])


def chat_fields(limits: RequestLimits) -> dict[str, Any]:
    props = completion_fields(limits)
    props.pop("prompt")
    props.update({
        "messages": {"type": "array", "items": MESSAGE, "minItems": 1},
        "tools": {"type": "array", "items": _object({"type": {"type": "string", "enum": ["function"]},
                                                     "function": {"type": "object"}})},
        "tool_choice": {"anyOf": [{"type": "string", "enum": ["auto", "none", "required"]}, {"type": "object"},
                                  {"type": "null"}]},
        "continue_final_message": {"anyOf": [{"type": "boolean"},
                                             {"type": "string", "enum": ["content", "reasoning_content"]}]},
        "verbose": {"type": "boolean", "description": "add __verbose (the native result) to the answer"},
        "response_format": _object({"type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                                    "schema": {"type": "object"}, "json_schema": {"type": "object"}}),
        "chat_template_kwargs": {"type": "object"},
        "add_generation_prompt": {"type": "boolean"},
        "parallel_tool_calls": {"type": "boolean"},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": limits.n_probs},
    })
    return props


BUDGET = {"type": "integer", "minimum": -1, "maximum": INT_MAX,
          "description": "thinking tokens before the end tag is forced (-1: the --reasoning-budget value)"}
CHAT_BUDGET_FIELDS: dict[str, Any] = {  # asgi/reasoning_budget.py (read outside asgi/params.py)
    "reasoning_budget_tokens": BUDGET, "thinking_budget_tokens": BUDGET,
    "reasoning_budget_message": {"type": "string", "description": "written before the forced end tag"},
    "reasoning_control": {"type": "boolean",
                          "description": "arm POST /v1/chat/completions/control (reasoning_end) for this completion"},
}
COMPLETION_BUDGET_FIELDS: dict[str, Any] = {
    **CHAT_BUDGET_FIELDS,
    "reasoning_budget_start_tag": {"type": "string"},
    "reasoning_budget_end_tags": {"type": "array", "items": {"type": "string"}},
    "reasoning_budget_end_tag": {"type": "string"},
    "generation_prompt": {"type": "string", "description": "the prompt's tail the reasoning budget sees first"},
}
COMPLETION_BUDGET_FIELDS.pop("thinking_budget_tokens")


def request_bodies(limits: RequestLimits) -> dict[str, dict[str, Any]]:
    """Request body schema per endpoint (Quart endpoint name)."""
    completion = _object({**completion_fields(limits), **COMPLETION_BUDGET_FIELDS}, ["prompt"])
    chat = _object({**chat_fields(limits), **CHAT_BUDGET_FIELDS}, ["messages"])
    infill_props = completion_fields(limits)
    infill_props.update({
        "input_prefix": {"type": "string"},
        "input_suffix": {"type": "string"},
        "input_extra": {"type": "array", "items": _object({"filename": {"type": "string"},
                                                           "text": {"type": "string"}}, ["text"])},
        "prompt": {"type": "string"},
    })
    embedding_input = {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": limits.prompts}]}
    embeddings = _object({
        "input": embedding_input,
        "content": embedding_input,
        "model": {"type": "string"},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "embd_normalize": {"type": "integer"},
    })
    rerank = _object({
        "query": {"type": "string"},
        "documents": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": limits.prompts},
        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": limits.prompts},
        "top_n": {"type": "integer", "minimum": 0},
        "return_text": {"type": "boolean"},
        "model": {"type": "string"},
    }, ["query"])
    return {
        "rerank.rerank": rerank,
        "completions.completion": completion,
        "completions.oai_completions": completion,
        "completions.infill": _object(infill_props, ["input_prefix", "input_suffix"]),
        "chat.chat_completions": chat,
        "chat.chat_control": _object({
            "id": {"type": "string", "minLength": 1, "description": "the running chat completion's id"},
            "action": {"type": "string", "enum": ["reasoning_end"]},
            "model": {"type": "string"}}, ["id", "action"]),
        "embeddings.embeddings_native": embeddings,
        "embeddings.embeddings_oai": embeddings,
        "tokens.tokenize": _object({
            "content": {"anyOf": [{"type": "string"}, {"type": "array"}]},
            "add_special": {"type": "boolean"},
            "parse_special": {"type": "boolean"},
            "with_pieces": {"type": "boolean"},
            "model": {"type": "string"},
        }),
        "tokens.detokenize": _object({"tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                      "model": {"type": "string"}}),
        "tokens.apply_template": chat,
        "meta.post_props": _object({"system_prompt": {"type": "string"}, "model": {"type": "string"}}),
        "meta.slot_action": _object({"filename": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,200}$"},
                                     "model": {"type": "string"}}),
        "lora.post_lora_adapters": {"type": "array", "items": _object({"id": {"type": "integer", "minimum": 0},
                                                                       "scale": {"type": "number"}}, ["id"])},
        **compat_bodies(chat),
        # router mode (asgi/routes/models.py): the model's name or alias
        "models.load_model": _object({"model": {"type": "string"}}, ["model"]),
        "models.unload_model": _object({"model": {"type": "string"}}, ["model"]),
        "models.download_model": _object({"model": {"type": "string"}}, ["model"]),
        "streams.streams_lookup": _object({"conversation_ids": {
            "type": "array", "items": {"type": "string"},
            "description": "ids whose resumable-stream sessions to report (each also matches `ID::model`); "
                           "as in llama-server, a value that is not an array of strings is ignored"}}),
    }


QUERY: dict[str, list[dict[str, Any]]] = {
    "meta.health": [{"name": "fail_on_no_slot", "in": "query", "schema": {"type": "string"},
                     "description": "answer 503 when no slot is idle"},
                    {"name": "include_slots", "in": "query", "schema": {"type": "string"}}],
    "meta.slots": [{"name": "fail_on_no_slot", "in": "query", "schema": {"type": "string"}},
                   {"name": "model", "in": "query", "schema": {"type": "string"}}],
    "meta.get_props": [{"name": "model", "in": "query", "schema": {"type": "string"}}],
    "meta.metrics": [{"name": "model", "in": "query", "schema": {"type": "string"},
                      "description": "router mode: the model whose metrics to read (required there)"}],
    "lora.get_lora_adapters": [{"name": "model", "in": "query", "schema": {"type": "string"}}],
    "lora.post_lora_adapters": [{"name": "model", "in": "query", "schema": {"type": "string"}}],
    "models.list_models": [{"name": "reload", "in": "query", "schema": {"type": "string"},
                            "description": "router mode: read --models-dir and --models-preset again"}],
    "models.delete_model": [{"name": "model", "in": "query", "required": True, "schema": {"type": "string"}}],
    "cors_proxy.cors_proxy": [{"name": "url", "in": "query", "required": True, "schema": {"type": "string"},
                               "description": "the http(s) URL to relay to (needs --ui-mcp-proxy, else 403)"}],
    "streams.stream_get": [{"name": "conv_id", "in": "query", "required": True, "schema": {"type": "string"},
                            "description": "the X-Conversation-Id the stream was started with"},
                           {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 0},
                            "description": "byte offset to replay from (default 0)"}],
    "streams.stream_delete": [{"name": "conv_id", "in": "query", "required": True, "schema": {"type": "string"}}],
    "meta.slot_action": [{"name": "action", "in": "query", "required": True,
                          "schema": {"type": "string", "enum": ["save", "restore", "erase"]}}],
}


def openapi_document(app: Quart, limits: RequestLimits) -> dict[str, Any]:
    bodies = request_bodies(limits)
    paths: dict[str, Any] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{([^}]+)}", path)]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}.{len(paths)}",
                "parameters": params + QUERY.get(rule.endpoint, []),
                "responses": {
                    "200": {"description": "success"},
                    "default": {"description": "an error in the OpenAI shape",
                                "content": {"application/json": {"schema": ERROR}}},
                },
            }
            if method == "POST":
                body = bodies.get(rule.endpoint)
                op["requestBody"] = {
                    "required": rule.endpoint not in ("meta.post_props", "meta.slot_action"),
                    "content": {"application/json": {"schema": body if body is not None else {"type": "object"}}},
                }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "pyllama-server (llama-server compatible)", "version": __version__},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }


def register_openapi(app: Quart) -> None:
    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        from quart import request

        from asgi.http import json_response
        from asgi.state import server_state

        doc = openapi_document(app, server_state().settings.limits)
        if request.root_path:  # --api-prefix: the paths above are relative to it
            doc["servers"] = [{"url": request.root_path}]
        return json_response(doc)
