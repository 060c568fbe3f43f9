"""GBNF parsing and matching: llama.cpp's bundled grammars, its integration cases, malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyllama.grammar.matcher import CompiledGrammar
from pyllama.grammar.parser import GrammarError, format_grammar, parse_grammar

BUILTIN = Path(__file__).resolve().parents[2] / "pyllama" / "grammar" / "builtin"
CASES = json.loads((Path(__file__).parent / "data" / "integration_cases.json").read_text())["cases"]


def compiled(text: str) -> CompiledGrammar:
    return CompiledGrammar(parse_grammar(text))


@pytest.mark.parametrize("path", sorted(BUILTIN.glob("*.gbnf")), ids=lambda p: p.stem)
def test_builtin_grammars_parse(path: Path) -> None:
    g = compiled(path.read_text())
    assert g.grammar.rules and "root" in g.grammar.symbol_ids


def test_all_llama_cpp_grammars_are_bundled() -> None:
    names = {p.stem for p in BUILTIN.glob("*.gbnf")}
    assert {"json", "json_arr", "list", "arithmetic", "c", "chess", "english", "japanese"} <= names


@pytest.mark.parametrize(
    ("name", "text", "ok", "bad"),
    [
        ("json", '{"a": [1, 2.5e3, "x\\n", true, null]}', True, False),
        ("json", '{"a": }', False, True),
        ("arithmetic", "(1+2)*3=x\n", True, False),
        ("chess", "1. e4 e5\n2. Nf3 Nc6\n", True, False),
        ("list", "- one\n- two\n", True, False),
        ("japanese", "日本語の文。", True, False),
    ],
)
def test_builtin_grammar_matches(name: str, text: str, ok: bool, bad: bool) -> None:
    g = compiled((BUILTIN / f"{name}.gbnf").read_text())
    assert g.accepts_text(text) is ok
    if bad:
        assert not g.accepts_prefix(text)


GRAMMAR_CASES = [c for c in CASES if c["kind"] == "grammar"]


def match_string(g: CompiledGrammar, value: str | list[str | int]) -> bool:
    """test-grammar-integration.cpp's match_string: every character is token 0, token(N) is token N."""
    from pyllama.grammar.matcher import DEAD

    parts = [value] if isinstance(value, str) else value
    state = g.initial_state
    for part in parts:
        steps = [(0, [ord(c)]) for c in part] if isinstance(part, str) else [(part, [ord(c) for c in f"<[{part}]>"])]
        for token, chars in steps:
            state = g.accept_token(state, token, chars)
            if state == DEAD:
                return False
    return g.can_end(state)


@pytest.mark.parametrize("case", GRAMMAR_CASES, ids=[c["desc"][:40] for c in GRAMMAR_CASES])
def test_llama_cpp_integration_grammars(case: dict[str, Any]) -> None:
    """tests/test-grammar-integration.cpp: passing strings match, failing strings do not."""
    g = compiled(case["text"])
    for s in case["passing"]:
        assert match_string(g, s), s
    for s in case["failing"]:
        assert not match_string(g, s), s


def test_format_matches_llama_cpp_printer() -> None:
    g = parse_grammar('root ::= "a"{2,3} [b-d]* | x\nx ::= [^\\n] .')
    assert format_grammar(g) == (
        "root ::= [a] [a] root_1 root_2 | x \n"
        "root_1 ::= [a] | \n"
        "root_2 ::= [b-d] root_2 | \n"
        "x ::= [^<U+000A>.] \n"  # llama.cpp's printer does not close a class before "."
    )


def test_repetition_rule_structure() -> None:
    """S{m,n} -> m copies then nested optional rules, as llama.cpp rewrites it."""
    g = parse_grammar('root ::= "a"{1,3}')
    assert g.symbol_ids == {"root": 0, "root_1": 1, "root_2": 2}
    assert len(g.rules) == 3


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        ('root ::= "abc', "unexpected end of input", 1, 14),
        ("root ::= [a-", "unexpected end of input", 1, 13),
        ("root := x", "expecting ::=", 1, 6),
        ('root ::= x\nx ::= "\\q"', "unknown escape", 2, 8),
        ('root ::= ("a"', "expecting ')'", 1, 14),
        ("root ::= foo", "Undefined rule identifier 'foo'", 1, 10),
        ('root ::= "a"\n  x{3}', "expecting ::=", 2, 4),
        ('root ::= "a" )', "expecting newline or end", 1, 14),
        ('root ::= "a"{2', "expecting ','", 1, 15),
        ('root ::= "a"{,2}', "expecting an int", 1, 14),
        ("root ::= *", "expecting preceding item", 1, 11),
        ('root ::= "\\x4"', "expecting 2 hex chars", 1, 13),
        ('\n\n  root ::= [abc', "unexpected end of input", 3, 16),
    ],
)
def test_malformed_grammar_names_line_and_column(text: str, message: str, line: int, col: int) -> None:
    with pytest.raises(GrammarError) as err:
        parse_grammar(text)
    msg = str(err.value)
    assert msg.startswith("Failed to parse grammar")
    assert message in msg
    assert f"line {line}, column {col}" in msg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('a ::= "x"', "does not contain a 'root' symbol"),
        ('root ::= root "a"', "left recursion"),
        ('root ::= x\nx ::= y "a" | "b"\ny ::= "c"? x', "left recursion"),
        ("", "no rules"),
        ('root ::= "a"{3000}', "sane defaults"),
    ],
)
def test_invalid_grammars(text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        parse_grammar(text)


def test_grammar_error_is_a_400() -> None:
    from pyllama.errors import InvalidRequestError

    assert issubclass(GrammarError, InvalidRequestError)


def test_token_references_need_ids_or_lookup() -> None:
    g = parse_grammar('root ::= <[42]> "x" !<[7]>')
    assert g.rules[0][0] == (8, 42)  # TOKEN
    with pytest.raises(GrammarError, match="no vocab"):
        parse_grammar("root ::= <think>")
    g = parse_grammar("root ::= <think>", token_lookup=lambda t: 5 if t == "<think>" else None)
    assert g.rules[0][0] == (8, 5)
