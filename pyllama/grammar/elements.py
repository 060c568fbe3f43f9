"""The grammar's data: element kinds, parsed rules, errors, and llama.cpp's printer.

A rule is a flat list of (kind, value) elements exactly as llama.cpp stores them
(llama_grammar_element): alternatives separated by ALT, terminated by END; a character
class is CHAR/CHAR_NOT followed by CHAR_ALT / CHAR_RNG_UPPER elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyllama.errors import InvalidRequestError

END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY, TOKEN, TOKEN_NOT = range(10)
TYPE_NAMES = (
    "END", "ALT", "RULE_REF", "CHAR", "CHAR_NOT", "CHAR_RNG_UPPER", "CHAR_ALT", "CHAR_ANY", "TOKEN", "TOKEN_NOT",
)  # fmt: skip
MAX_REPETITION_THRESHOLD = 2000

Element = tuple[int, int]  # (type, value): code point, rule id or token id
Rule = list[Element]


class GrammarError(InvalidRequestError):
    """A grammar that cannot be used; the message starts like llama-server's."""


@dataclass
class ParsedGrammar:
    rules: list[Rule]
    symbol_ids: dict[str, int] = field(default_factory=dict)

    def name_of(self, rule_id: int) -> str:
        for name, i in self.symbol_ids.items():
            if i == rule_id:
                return name
        return f"<rule {rule_id}>"


def _char_text(c: int) -> str:
    return chr(c) if 0x20 <= c <= 0x7F else f"<U+{c:04X}>"


def format_grammar(grammar: ParsedGrammar) -> str:
    """llama_grammar_parser::print: one line per rule (for debugging and tests)."""
    names = {i: n for n, i in grammar.symbol_ids.items()}
    lines = []
    for rule_id, rule in enumerate(grammar.rules):
        out = [f"{names[rule_id]} ::= "]
        for i, (kind, value) in enumerate(rule[:-1]):
            if kind == ALT:
                out.append("| ")
            elif kind == RULE_REF:
                out.append(f"{names[value]} ")
            elif kind == CHAR:
                out.append("[" + _char_text(value))
            elif kind == CHAR_NOT:
                out.append("[^" + _char_text(value))
            elif kind == CHAR_RNG_UPPER:
                out.append("-" + _char_text(value))
            elif kind == CHAR_ALT:
                out.append(_char_text(value))
            elif kind == CHAR_ANY:
                out.append(".")
            elif kind == TOKEN:
                out.append(f"<[{value}]> ")
            elif kind == TOKEN_NOT:
                out.append(f"!<[{value}]> ")
            if kind in (CHAR, CHAR_NOT, CHAR_ALT, CHAR_RNG_UPPER, CHAR_ANY) and rule[i + 1][0] not in (
                CHAR_ALT,
                CHAR_RNG_UPPER,
                CHAR_ANY,
            ):
                out.append("] ")
        lines.append("".join(out))
    return "\n".join(lines) + "\n"
