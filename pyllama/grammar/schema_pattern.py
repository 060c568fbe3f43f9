"""A JSON-schema `pattern` (anchored regex) -> GBNF, llama.cpp's subset of regex syntax.

Literals, `.`, groups `( )` / `(?: )`, alternation, classes `[...]`, `* + ?` and `{m,n}`.
Anything else (lookarounds, `\\w`, inner anchors) raises the caller's "unsupported" error
and the string is left unconstrained, as llama.cpp does; malformed regexes raise
"invalid". Port of `_pattern_to_rule` in common/json-schema-to-grammar.cpp.
"""

from __future__ import annotations

from collections.abc import Callable

from pyllama.grammar.schema_rules import INT_MAX, build_repetition, gbnf_escape_length

_NON_LITERAL = set("|.()[]{}*+?^$")
_ESCAPED_IN_REGEX_ONLY = set("^$.[]()|{}*+?")
_MAX_DEPTH = 100

Item = tuple[str, bool]  # (text, is_literal)


class PatternTranslator:
    def __init__(
        self,
        pattern: str,
        name: str,
        add_rule: Callable[[str, str], str],
        dot_rule: Callable[[], str],
        unsupported: type[Exception],
        invalid: type[Exception],
    ) -> None:
        self.p = pattern
        self.name = name
        self.add_rule = add_rule
        self.dot_rule = dot_rule
        self.unsupported = unsupported
        self.invalid = invalid
        self.i = 0
        self.depth = 0
        self.sub_rule_ids: dict[str, str] = {}

    @staticmethod
    def to_rule(item: Item) -> str:
        return f'"{item[0]}"' if item[1] else item[0]

    def translate(self) -> str:
        rule = self.to_rule(self.transform())
        if self.depth != 0:
            raise self.invalid("unbalanced parentheses")
        return rule

    def transform(self) -> Item:
        p, n = self.p, len(self.p)
        seq: list[Item] = []

        def join_seq() -> Item:
            out: list[Item] = []
            literal = ""
            for text, is_lit in seq:
                if is_lit:
                    literal += text
                else:
                    if literal:
                        out.append((literal, True))
                        literal = ""
                    out.append((text, False))
            if literal:
                out.append((literal, True))
            return " ".join(self.to_rule(x) for x in out), False

        while self.i < n:
            c = p[self.i]
            if c == ".":
                seq.append((self.dot_rule(), False))
                self.i += 1
            elif c == "(":
                self.i += 1
                if self.i < n and p[self.i] == "?":
                    if self.i + 1 < n and p[self.i + 1] == ":":
                        self.i += 2
                    else:
                        raise self.unsupported("unsupported group syntax")
                self.depth += 1
                if self.depth > _MAX_DEPTH:
                    raise self.unsupported("pattern nesting too deep")
                seq.append(("(" + self.to_rule(self.transform()) + ")", False))
            elif c == ")":
                self.i += 1
                if self.depth == 0:
                    raise self.invalid("unbalanced parentheses")
                self.depth -= 1
                return join_seq()
            elif c in "^$":
                raise self.unsupported("anchor inside the pattern")
            elif c == "[":
                cls = "["
                self.i += 1
                while self.i < n and p[self.i] != "]":
                    if p[self.i] == "\\":
                        k = gbnf_escape_length(p, self.i)
                        if k == 0:
                            raise self.unsupported("unsupported escape in character class: " + p[self.i : self.i + 2])
                        cls += p[self.i : self.i + k]
                        self.i += k
                    else:
                        cls += p[self.i]
                        self.i += 1
                if self.i >= n:
                    raise self.invalid("unterminated character class")
                seq.append((cls + "]", False))
                self.i += 1
            elif c == "|":
                seq.append(("|", False))
                self.i += 1
            elif c in "*+?":
                if not seq:
                    raise self.invalid("nothing to repeat")
                seq[-1] = (self.to_rule(seq[-1]) + c, False)
                self.i += 1
            elif c == "{":
                self._repeat(seq)
            else:
                seq.append((self._literal(c), True))
        return join_seq()

    def _repeat(self, seq: list[Item]) -> None:
        p, n = self.p, len(self.p)
        body = ""
        self.i += 1
        while self.i < n and p[self.i] != "}":
            body += p[self.i]
            self.i += 1
        if self.i >= n:
            raise self.unsupported("unterminated curly brackets")
        self.i += 1
        nums = body.split(",")
        if len(nums) not in (1, 2):
            raise self.unsupported("wrong number of values in curly brackets")
        try:
            if len(nums) == 1:
                lo = hi = int(nums[0])
            else:
                lo = int(nums[0]) if nums[0] else 0
                hi = int(nums[1]) if nums[1] else INT_MAX
        except ValueError:
            raise self.unsupported("invalid number in curly brackets") from None
        if not seq:
            raise self.invalid("nothing to repeat")
        sub, is_lit = seq[-1]
        if not is_lit:
            sub_id = self.sub_rule_ids.get(sub)
            if sub_id is None:
                sub_id = self.sub_rule_ids[sub] = self.add_rule(f"{self.name}-{len(self.sub_rule_ids) + 1}", sub)
            sub = sub_id
        seq[-1] = (build_repetition(f'"{sub}"' if is_lit else sub, lo, hi, ""), False)

    def _literal(self, c: str) -> str:
        p, n = self.p, len(self.p)
        literal = ""
        while self.i < n:
            ch = p[self.i]
            if ch == "\\":
                if self.i == n - 1:
                    raise self.invalid("trailing backslash")
                nxt = p[self.i + 1]
                if nxt in _ESCAPED_IN_REGEX_ONLY:
                    literal += nxt
                    self.i += 2
                else:
                    k = gbnf_escape_length(p, self.i)
                    if k == 0:
                        raise self.unsupported("unsupported escape: " + p[self.i : self.i + 2])
                    literal += p[self.i : self.i + k]
                    self.i += k
            elif ch == '"':
                literal += '\\"'
                self.i += 1
            elif ch not in _NON_LITERAL and (
                self.i == n - 1 or not literal or p[self.i + 1] == "." or p[self.i + 1] not in _NON_LITERAL
            ):
                literal += ch
                self.i += 1
            else:
                break
        if not literal:
            raise self.unsupported("unsupported character: " + c)
        return literal
