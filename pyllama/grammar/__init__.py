"""Grammar-constrained decoding: GBNF (llama.cpp's grammar format) and JSON schema.

`parse_grammar` reads GBNF, `GrammarConstraint` restricts sampling to it (the sampler
builds one from `SamplingParams.grammar`), `json_schema_to_grammar` converts a JSON
schema like llama.cpp's converter, and `builtin_grammar` returns the grammars llama.cpp
ships (json, json_arr, list, arithmetic, c, chess, english, japanese; MIT license).
"""

from __future__ import annotations

from importlib import resources

from pyllama.grammar.constraint import GrammarConstraint, compile_grammar
from pyllama.grammar.json_schema import json_schema_to_grammar
from pyllama.grammar.parser import GrammarError, ParsedGrammar, format_grammar, parse_grammar
from pyllama.grammar.response_format import request_grammar, response_format_schema, schema_grammar
from pyllama.grammar.schema_model import SchemaError

__all__ = [
    "GrammarConstraint",
    "GrammarError",
    "ParsedGrammar",
    "SchemaError",
    "builtin_grammar",
    "builtin_grammar_names",
    "compile_grammar",
    "format_grammar",
    "json_schema_to_grammar",
    "parse_grammar",
    "request_grammar",
    "response_format_schema",
    "schema_grammar",
]


def builtin_grammar_names() -> list[str]:
    root = resources.files("pyllama.grammar") / "builtin"
    return sorted(p.name[: -len(".gbnf")] for p in root.iterdir() if p.name.endswith(".gbnf"))


def builtin_grammar(name: str) -> str:
    """The text of a bundled grammar, e.g. builtin_grammar("json")."""
    if name not in builtin_grammar_names():
        raise GrammarError(f"Failed to parse grammar: no built-in grammar {name!r} (have: {', '.join(builtin_grammar_names())})")
    return (resources.files("pyllama.grammar") / "builtin" / f"{name}.gbnf").read_text(encoding="utf-8")
