"""GBNF text -> rules of grammar elements, as llama.cpp's llama_grammar_parser builds them.

The element encoding (END, ALT, RULE_REF, CHAR, ...) and the rewriting of repetitions
into helper rules (`S{m,n}` -> m copies + nested optional rules) follow
src/llama-grammar.cpp exactly, so rule ids and the printed grammar match llama.cpp's.
Errors carry the line and column where parsing stopped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pyllama.grammar.elements import (
    ALT,
    CHAR,
    CHAR_ALT,
    CHAR_ANY,
    CHAR_NOT,
    CHAR_RNG_UPPER,
    END,
    MAX_REPETITION_THRESHOLD,
    RULE_REF,
    TOKEN,
    TOKEN_NOT,
    TYPE_NAMES,
    Element,
    GrammarError,
    ParsedGrammar,
    Rule,
    format_grammar,
)

TokenLookup = Callable[[str], "int | None"]
MAX_GROUP_DEPTH = 64  # nested ( ... ): the parser recurses per level, real grammars use a handful

__all__ = [
    "ALT", "CHAR", "CHAR_ALT", "CHAR_ANY", "CHAR_NOT", "CHAR_RNG_UPPER", "END", "MAX_REPETITION_THRESHOLD",
    "RULE_REF", "TOKEN", "TOKEN_NOT", "TYPE_NAMES", "Element", "GrammarError", "ParsedGrammar", "Rule",
    "TokenLookup", "check_left_recursion", "format_grammar", "line_col", "parse_grammar",
]  # fmt: skip


class _ParseError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


def _is_word_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "-" or ("0" <= c <= "9")


def line_col(src: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character offset `pos`."""
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return line, col


class _Parser:
    def __init__(self, src: str, token_lookup: TokenLookup | None) -> None:
        self.src = src + "\0" * 8  # padding like the C string's terminator: lookahead never overruns
        self.n = len(src)
        self.token_lookup = token_lookup
        self.symbol_ids: dict[str, int] = {}
        self.rules: list[Rule] = []
        self.depth = 0  # open parentheses: each one is a level of recursion here

    # -- lexical helpers (parse_space, parse_name, parse_int, parse_char) --

    def space(self, pos: int, newline_ok: bool) -> int:
        s = self.src
        while True:
            c = s[pos]
            if c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            elif c == "#":
                while s[pos] not in "\r\n\0":
                    pos += 1
            else:
                return pos

    def name(self, pos: int) -> int:
        end = pos
        while _is_word_char(self.src[end]):
            end += 1
        if end == pos:
            raise _ParseError("expecting name", pos)
        return end

    def integer(self, pos: int) -> int:
        end = pos
        while "0" <= self.src[end] <= "9":
            end += 1
        if end == pos:
            raise _ParseError("expecting integer", pos)
        return end

    def hex(self, pos: int, size: int) -> tuple[int, int]:
        value = 0
        end = pos
        while end < pos + size and self.src[end] != "\0":
            c = self.src[end]
            if c in "0123456789abcdefABCDEF":
                value = value * 16 + int(c, 16)
            else:
                break
            end += 1
        if end != pos + size:
            raise _ParseError(f"expecting {size} hex chars", pos)
        return value, end

    def char(self, pos: int) -> tuple[int, int]:
        c = self.src[pos]
        if c == "\\":
            e = self.src[pos + 1]
            if e == "x":
                return self.hex(pos + 2, 2)
            if e == "u":
                return self.hex(pos + 2, 4)
            if e == "U":
                return self.hex(pos + 2, 8)
            simple = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
            if e in simple:
                return ord(simple[e]), pos + 2
            raise _ParseError("unknown escape", pos)
        if pos < self.n:
            return ord(c), pos + 1
        raise _ParseError("unexpected end of input", pos)

    def token(self, pos: int) -> tuple[int, int]:
        start = pos
        if self.src[pos] != "<":
            raise _ParseError("expecting '<'", pos)
        pos += 1
        if self.src[pos] == "[":
            pos += 1
            end = self.integer(pos)
            token_id = int(self.src[pos:end])
            if token_id > 0xFFFFFFFF:
                raise _ParseError("parsed token id is too big", pos)
            if self.src[end] != "]":
                raise _ParseError("expecting ']'", end)
            if self.src[end + 1] != ">":
                raise _ParseError("expecting '>'", end + 1)
            return token_id, end + 2
        while self.src[pos] not in ">\0":
            pos += 1
        if self.src[pos] != ">":
            raise _ParseError("expecting '>'", pos)
        text = self.src[start : pos + 1]
        if self.token_lookup is None:
            raise _ParseError("no vocab to parse token", start)
        found = self.token_lookup(text)
        if found is None:
            raise _ParseError(f"invalid token '{text}'", start)
        return found, pos + 1

    # -- symbols and rules --

    def symbol_id(self, name: str) -> int:
        return self.symbol_ids.setdefault(name, len(self.symbol_ids))

    def generate_symbol_id(self, base: str) -> int:
        next_id = len(self.symbol_ids)
        self.symbol_ids[f"{base}_{next_id}"] = next_id
        return next_id

    def add_rule(self, rule_id: int, rule: Rule) -> None:
        while len(self.rules) <= rule_id:
            self.rules.append([])
        self.rules[rule_id] = rule

    def alternates(self, pos: int, rule_name: str, rule_id: int, nested: bool) -> int:
        rule: Rule = []
        pos = self.sequence(pos, rule_name, rule, nested)
        while self.src[pos] == "|":
            rule.append((ALT, 0))
            pos = self.space(pos + 1, True)
            pos = self.sequence(pos, rule_name, rule, nested)
        rule.append((END, 0))
        self.add_rule(rule_id, rule)
        return pos

    def sequence(self, pos: int, rule_name: str, rule: Rule, nested: bool) -> int:
        s = self.src
        last_sym_start = len(rule)
        n_prev_rules = 1

        def repeat(min_times: int, max_times: int | None) -> None:
            nonlocal n_prev_rules
            if last_sym_start == len(rule):
                raise _ParseError("expecting preceding item to */+/?/{", pos)
            prev = rule[last_sym_start:]
            total = max_times if max_times else (min_times if min_times > 0 else 1)
            if n_prev_rules * total > MAX_REPETITION_THRESHOLD:
                raise _ParseError(
                    "number of rules that are going to be repeated multiplied by the new repetition "
                    "exceeds sane defaults, please reduce the number of repetitions or rule complexity",
                    pos,
                )
            if min_times == 0:
                del rule[last_sym_start:]
            else:
                for _ in range(1, min_times):
                    rule.extend(prev)
            last_rec = 0
            n_opt = 1 if max_times is None else max_times - min_times
            for i in range(n_opt):
                rec: Rule = list(prev)
                rec_id = self.generate_symbol_id(rule_name)
                if i > 0 or max_times is None:
                    rec.append((RULE_REF, rec_id if max_times is None else last_rec))
                rec += [(ALT, 0), (END, 0)]
                self.add_rule(rec_id, rec)
                last_rec = rec_id
            if n_opt > 0:
                rule.append((RULE_REF, last_rec))
            n_prev_rules *= total

        while pos < self.n:
            c = s[pos]
            if c == '"':
                pos += 1
                last_sym_start = len(rule)
                n_prev_rules = 1
                while s[pos] != '"':
                    if pos >= self.n:
                        raise _ParseError("unexpected end of input", pos)
                    value, pos = self.char(pos)
                    rule.append((CHAR, value))
                pos = self.space(pos + 1, nested)
            elif c == "[":
                pos += 1
                start_type = CHAR
                if s[pos] == "^":
                    pos += 1
                    start_type = CHAR_NOT
                last_sym_start = len(rule)
                n_prev_rules = 1
                while s[pos] != "]":
                    if pos >= self.n:
                        raise _ParseError("unexpected end of input", pos)
                    value, pos = self.char(pos)
                    rule.append((CHAR_ALT if last_sym_start < len(rule) else start_type, value))
                    if s[pos] == "-" and s[pos + 1] != "]":
                        if pos + 1 >= self.n:
                            raise _ParseError("unexpected end of input", pos + 1)
                        upper, pos = self.char(pos + 1)
                        rule.append((CHAR_RNG_UPPER, upper))
                pos = self.space(pos + 1, nested)
            elif c in "<!":
                kind = TOKEN
                if c == "!":
                    kind = TOKEN_NOT
                    pos += 1
                token_id, end = self.token(pos)
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((kind, token_id))
                pos = self.space(end, nested)
            elif _is_word_char(c):
                end = self.name(pos)
                ref = self.symbol_id(s[pos:end])
                pos = self.space(end, nested)
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((RULE_REF, ref))
            elif c == "(":
                if self.depth >= MAX_GROUP_DEPTH:
                    raise _ParseError(f"groups nested deeper than {MAX_GROUP_DEPTH} levels (grammar nesting limit)", pos)
                self.depth += 1
                pos = self.space(pos + 1, True)
                n_before = len(self.symbol_ids)
                sub_id = self.generate_symbol_id(rule_name)
                pos = self.alternates(pos, rule_name, sub_id, True)
                self.depth -= 1
                n_prev_rules = max(1, len(self.symbol_ids) - n_before)
                last_sym_start = len(rule)
                rule.append((RULE_REF, sub_id))
                if s[pos] != ")":
                    raise _ParseError("expecting ')'", pos)
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((CHAR_ANY, 0))
                pos = self.space(pos + 1, nested)
            elif c in "*+?":
                pos = self.space(pos + 1, nested)
                repeat(*{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                pos = self.space(pos + 1, nested)
                if not "0" <= s[pos] <= "9":
                    raise _ParseError("expecting an int", pos)
                end = self.integer(pos)
                min_times = int(s[pos:end])
                pos = self.space(end, nested)
                max_times: int | None
                if s[pos] == "}":
                    max_times = min_times
                    pos = self.space(pos + 1, nested)
                elif s[pos] == ",":
                    pos = self.space(pos + 1, nested)
                    max_times = None
                    if "0" <= s[pos] <= "9":
                        end = self.integer(pos)
                        max_times = int(s[pos:end])
                        pos = self.space(end, nested)
                    if s[pos] != "}":
                        raise _ParseError("expecting '}'", pos)
                    pos = self.space(pos + 1, nested)
                else:
                    raise _ParseError("expecting ','", pos)
                if min_times > MAX_REPETITION_THRESHOLD:
                    raise _ParseError(
                        "number of repetitions exceeds sane defaults, please reduce the number of repetitions", pos
                    )
                if max_times is not None and max_times > MAX_REPETITION_THRESHOLD:
                    max_times = None
                repeat(min_times, max_times)
            else:
                break
        return pos

    def rule(self, pos: int) -> int:
        end = self.name(pos)
        name = self.src[pos:end]
        pos = self.space(end, False)
        rule_id = self.symbol_id(name)
        if self.src[pos : pos + 3] != "::=":
            raise _ParseError("expecting ::=", pos)
        pos = self.space(pos + 3, True)
        pos = self.alternates(pos, name, rule_id, False)
        c = self.src[pos]
        if c == "\r":
            pos += 2 if self.src[pos + 1] == "\n" else 1
        elif c == "\n":
            pos += 1
        elif pos < self.n:
            raise _ParseError("expecting newline or end", pos)
        return self.space(pos, True)

    def parse(self) -> ParsedGrammar:
        pos = self.space(0, True)
        while pos < self.n:
            pos = self.rule(pos)
        for rule in self.rules:
            if not rule:
                raise _ParseError("Undefined rule", self.n)
            for kind, value in rule:
                if kind == RULE_REF and (value >= len(self.rules) or not self.rules[value]):
                    name = next(n for n, i in self.symbol_ids.items() if i == value)
                    raise _ParseError(f"Undefined rule identifier '{name}'", self._first_use(name))
        return ParsedGrammar(self.rules, self.symbol_ids)

    def _first_use(self, name: str) -> int:
        found = re.search(r"(?<![A-Za-z0-9-])" + re.escape(name) + r"(?![A-Za-z0-9-])", self.src[: self.n])
        return found.start() if found else 0


def parse_grammar(text: str, *, token_lookup: TokenLookup | None = None, root: str = "root") -> ParsedGrammar:
    """Parse GBNF; raise GrammarError naming line and column on malformed input."""
    if "\0" in text:
        text = text[: text.index("\0")]
    parser = _Parser(text, token_lookup)
    try:
        grammar = parser.parse()
    except _ParseError as err:
        line, col = line_col(text, min(err.pos, len(text)))
        context = text[err.pos : err.pos + 20].split("\n")[0]
        where = f" near '{context}'" if context else ""
        raise GrammarError(f"Failed to parse grammar: {err} at line {line}, column {col}{where}") from None
    if not grammar.rules:
        raise GrammarError("Failed to parse grammar: the grammar has no rules")
    if root not in grammar.symbol_ids:
        raise GrammarError(f"Failed to parse grammar: grammar does not contain a '{root}' symbol")
    check_left_recursion(grammar)
    return grammar


def check_left_recursion(grammar: ParsedGrammar) -> None:
    """llama_grammar_detect_left_recursion: the stack matcher would loop forever on it.

    Depth-first over the rule references that can come first in a rule, as llama.cpp
    walks them, but with an explicit stack (a chain of thousands of rules must not meet
    Python's recursion limit) and skipping rules already cleared (llama.cpp re-walks them,
    exponential on a ladder of rules that each name the next one twice)."""
    rules = grammar.rules
    n = len(rules)
    may_be_empty = [False] * n
    for i, rule in enumerate(rules):
        at_start = True
        for kind, _ in rule:
            if kind in (END, ALT):
                if at_start:
                    may_be_empty[i] = True
                    break
                at_start = True
            else:
                at_start = False

    def leading_refs(i: int) -> list[int]:
        refs = []
        recurse = True
        for kind, value in rules[i]:
            if kind == RULE_REF and recurse:
                refs.append(value)
                recurse = may_be_empty[value]
            elif kind in (END, ALT):
                recurse = True
            else:
                recurse = False
        return refs

    NEW, IN_PROGRESS, DONE = 0, 1, 2
    state = [NEW] * n
    for first in range(n):
        if state[first] != NEW:
            continue
        state[first] = IN_PROGRESS
        stack = [(first, iter(leading_refs(first)))]
        while stack:
            i, refs = stack[-1]
            ref = next(refs, None)
            if ref is None:
                state[i] = DONE
                stack.pop()
            elif state[ref] == IN_PROGRESS:
                raise GrammarError(
                    f"Failed to parse grammar: unsupported grammar, left recursion detected for nonterminal "
                    f"'{grammar.name_of(first)}'"
                )
            elif state[ref] == NEW:
                state[ref] = IN_PROGRESS
                stack.append((ref, iter(leading_refs(ref))))
