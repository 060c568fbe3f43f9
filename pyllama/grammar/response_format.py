"""From a request body to the grammar that constrains it, as llama-server decides.

`/completion` takes `grammar` (GBNF) or `json_schema`; `/v1/chat/completions` also takes
OpenAI's `response_format` ({"type": "json_object"}, {"type": "json_schema",
"json_schema": {"schema": ...}}). An empty schema means "any JSON object".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyllama.errors import InvalidRequestError
from pyllama.grammar.json_schema import json_schema_to_grammar


def response_format_schema(response_format: Any, json_schema: Any = None) -> Any:
    """The JSON schema `response_format` asks for (or `json_schema` unchanged); None for free text."""
    if response_format is None:
        return json_schema
    if not isinstance(response_format, Mapping):
        raise InvalidRequestError("response_format must be an object")
    kind = response_format.get("type", "")
    if kind == "json_object":
        if "schema" in response_format or not json_schema:
            return response_format.get("schema", {})
        return json_schema
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        if isinstance(wrapper, Mapping):
            return wrapper.get("schema", {})
        return response_format.get("schema", {})  # older llama-server / llama-cpp-python shape
    if kind not in ("", "text"):
        raise InvalidRequestError(f'response_format type must be one of "text" or "json_object", but got: {kind}')
    return json_schema


def schema_grammar(schema: Any) -> str:
    """GBNF for a request's schema; `{}` becomes any object, errors read like llama-server's."""
    if isinstance(schema, Mapping) and not schema:
        schema = {"type": "object"}
    try:
        return json_schema_to_grammar(schema)
    except InvalidRequestError as err:
        raise InvalidRequestError(f'"json_schema": {err}') from None


def request_grammar(body: Mapping[str, Any], *, chat: bool = False) -> str:
    """The GBNF constraining a request ("" when unconstrained).

    Completion: `json_schema` wins over `grammar`. Chat: both together are an error, and
    `response_format` may supply the schema.
    """
    json_schema = body.get("json_schema")
    grammar = body.get("grammar") or ""
    if not isinstance(grammar, str):
        raise InvalidRequestError('"grammar" must be a string')
    if chat:
        if json_schema is not None and grammar:
            raise InvalidRequestError("Cannot use both json_schema and grammar")
        json_schema = response_format_schema(body.get("response_format"), json_schema)
    if json_schema is not None:
        return schema_grammar(json_schema)
    return grammar
