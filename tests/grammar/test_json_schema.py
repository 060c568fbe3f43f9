"""JSON schema -> GBNF: llama.cpp's expected grammars verbatim, its integration strings, and
agreement with the `jsonschema` validator on generated documents."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pyllama.grammar.json_schema import json_schema_to_grammar
from pyllama.grammar.matcher import CompiledGrammar
from pyllama.grammar.parser import parse_grammar
from pyllama.grammar.schema_model import SchemaError
from tests.grammar.formats import format_checker

DATA = Path(__file__).parent / "data"
SCHEMA_CASES = json.loads((DATA / "schema_cases.json").read_text())["cases"]
INTEGRATION = [c for c in json.loads((DATA / "integration_cases.json").read_text())["cases"] if c["kind"] == "schema"]


def trim(s: str) -> str:
    """test-json-schema-to-grammar.cpp's trim(): outer whitespace and line indentation."""
    return re.sub(r"(^|\n)[ \t]+", r"\1", s.strip(" \n\r\t"))


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c["name"][:50] for c in SCHEMA_CASES])
def test_llama_cpp_expected_grammar(case: dict[str, Any]) -> None:
    schema = json.loads(case["schema"])
    if not case["ok"]:
        with pytest.raises(SchemaError):
            json_schema_to_grammar(schema)
        return
    grammar = json_schema_to_grammar(schema)
    assert trim(grammar) == trim(case["grammar"])
    parse_grammar(grammar)


@pytest.mark.parametrize("case", INTEGRATION, ids=[c["desc"][:50] for c in INTEGRATION])
def test_llama_cpp_integration_schemas(case: dict[str, Any]) -> None:
    g = CompiledGrammar(parse_grammar(json_schema_to_grammar(json.loads(case["text"]))))
    for s in case["passing"]:
        assert g.accepts_text(s), s
    for s in case["failing"]:
        assert not g.accepts_text(s), s


SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "formats": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "t": {"type": "string", "format": "time"},
        },
        "required": ["id", "day", "at", "t"],
        "additionalProperties": False,
    },
    "numbers": {
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"type": "integer", "exclusiveMinimum": -5, "maximum": 300}, {"type": "null"}]},
        "maxItems": 4,
    },
    "refs": {
        "$defs": {"node": {"type": "object", "properties": {"v": {"type": "boolean"}, "next": {"$ref": "#/$defs/node"}}, "additionalProperties": False}},
        "$ref": "#/$defs/node",
    },
    "tuple": {"type": "array", "prefixItems": [{"const": "x"}, {"type": "integer", "minimum": 10}, {"enum": [1, "two", None]}]},
    "extra": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
}


def sample(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int = 0) -> Any:
    """A random document, mostly valid under `schema`, sometimes not (to test rejection)."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        return sample(target, rng, root, depth + 1)
    if "anyOf" in schema:
        return sample(rng.choice(schema["anyOf"]), rng, root, depth)
    if "const" in schema:
        return schema["const"] if rng.random() < 0.9 else "y"
    if "enum" in schema:
        return rng.choice(schema["enum"]) if rng.random() < 0.9 else "zzz"
    t = schema.get("type")
    if t == "object":
        out: dict[str, Any] = {}
        for k, sub in schema.get("properties", {}).items():
            if k in schema.get("required", []) or (rng.random() < 0.6 and depth < 4):
                out[k] = sample(sub, rng, root, depth + 1)
        if isinstance(schema.get("additionalProperties"), dict) and rng.random() < 0.5:
            out["zz"] = sample(schema["additionalProperties"], rng, root, depth + 1)
        if rng.random() < 0.05:
            out["bogus"] = 1
        return out
    if t == "array":
        if "prefixItems" in schema:
            return [sample(s, rng, root, depth + 1) for s in schema["prefixItems"]]
        n = rng.randint(schema.get("minItems", 0), schema.get("maxItems", 4) + (1 if rng.random() < 0.1 else 0))
        return [sample(schema["items"], rng, root, depth + 1) for _ in range(n)]
    if t == "string":
        fmt = schema.get("format")
        if fmt == "uuid":
            return "12345678-9abc-def0-1234-56789abcdef0" if rng.random() < 0.8 else "1234"
        if fmt == "date":
            return rng.choice(["2024-02-29", "1999-12-31", "2024-13-01", "2024-1-01"])
        if fmt == "time":
            return rng.choice(["12:30:00Z", "23:59:59.123+01:00", "24:00:00Z"])
        if fmt == "date-time":
            return rng.choice(["2024-01-01T00:00:00Z", "2024-01-01 00:00:00Z"])
        if "pattern" in schema:
            return rng.choice(["abc@def.com", "x@y.com", "12345", "1234", "Abc@d.com"])
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 10)
        return "".join(rng.choice('ab "\\é') for _ in range(rng.randint(max(0, lo - 1), hi + 1)))
    if t == "integer":
        return rng.randint(schema.get("minimum", -10) - 2, schema.get("maximum", 400) + 2)
    if t == "number":
        return rng.choice([0.5, -1.25e3, 7, 2.5e20])
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    return {}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_grammar_agrees_with_jsonschema(name: str) -> None:
    """Documents in the converter's layout (schema property order) are accepted iff valid."""
    schema = SCHEMAS[name]
    g = CompiledGrammar(parse_grammar(json_schema_to_grammar(schema)))
    validator = jsonschema.Draft202012Validator(schema, format_checker=format_checker())
    rng = random.Random(name)
    n_valid = n_invalid = 0
    for _ in range(120):
        doc = sample(schema, rng, schema)
        text = json.dumps(doc, ensure_ascii=False, separators=rng.choice([(",", ":"), (", ", ": ")]))
        valid = validator.is_valid(doc)
        assert g.accepts_text(text) == valid, text
        n_valid += valid
        n_invalid += not valid
    assert n_valid >= 10 and n_invalid >= 2


def test_empty_schema_is_any_value_and_errors_are_400s() -> None:
    g = CompiledGrammar(parse_grammar(json_schema_to_grammar({})))
    assert g.accepts_text('{"a": [1, "x", null]}') and g.accepts_text("3.5")
    from pyllama.errors import InvalidRequestError

    for bad in [{"type": "nope"}, {"$ref": "http://x/y"}, {"type": "string", "pattern": "^(a$"}, {"enum": []}]:
        with pytest.raises(InvalidRequestError):
            json_schema_to_grammar(bad)


def test_response_format_shapes() -> None:
    from pyllama.grammar.response_format import request_grammar, response_format_schema

    obj = json_schema_to_grammar({"type": "object"})
    assert request_grammar({"response_format": {"type": "json_object"}}, chat=True) == obj
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    expected = json_schema_to_grammar(schema)
    assert request_grammar({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}, chat=True) == expected
    assert request_grammar({"response_format": {"type": "json_schema", "schema": schema}}, chat=True) == expected
    assert request_grammar({"response_format": {"type": "json_object", "schema": schema}}, chat=True) == expected
    assert request_grammar({"json_schema": schema, "grammar": 'root ::= "x"'}) == expected  # completion: schema wins
    assert request_grammar({"grammar": 'root ::= "x"'}) == 'root ::= "x"'
    assert request_grammar({"response_format": {"type": "text"}}, chat=True) == ""
    assert response_format_schema(None, None) is None
    from pyllama.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="Cannot use both"):
        request_grammar({"json_schema": schema, "grammar": 'root ::= "x"'}, chat=True)
    with pytest.raises(InvalidRequestError, match="response_format type"):
        request_grammar({"response_format": {"type": "yaml"}}, chat=True)
    with pytest.raises(InvalidRequestError, match=r'^"json_schema": '):
        request_grammar({"json_schema": {"type": "bogus"}})
