"""The grammar as a lazily built automaton over code points (llama.cpp's stack matcher).

llama.cpp keeps a set of pushdown stacks (each a list of positions in the rules, the top
being the next terminal to match) and, for every character, advances every stack. We do
the same, but intern each *set of stacks* as a numbered state and memoize transitions, so
a state seen before costs one dictionary lookup per character. Two facts make this cheap:

* after a stack's top terminal matches a character, the resulting stacks do not depend
  on which character it was, so a state's transition on a character only depends on the
  subset of its stacks whose terminal matched (`step_code`);
* right-recursive rules (`x ::= y x |`) keep stacks short, so states repeat a lot
  (every character inside a JSON string leaves the state unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pyllama.grammar.parser import (
    ALT,
    CHAR,
    CHAR_ALT,
    CHAR_ANY,
    CHAR_NOT,
    CHAR_RNG_UPPER,
    END,
    RULE_REF,
    TOKEN,
    TOKEN_NOT,
    GrammarError,
    ParsedGrammar,
)
from pyllama.grammar.utf8 import Partial, partial_range

Stack = tuple[int, ...]  # flat element positions, top last
DEAD = 0  # the state with no stacks: nothing more can be accepted
MAX_STATES = 200_000


@dataclass(frozen=True)
class CharClass:
    """The terminal at one position: `[a-z0-9]`, `[^"]`, `"x"` or `.`."""

    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]
    positive: bool
    any: bool
    after: int  # position of the element following the class
    after_is_end: bool

    def matches(self, c: int) -> bool:
        if self.any:
            return True
        found = bool(np.any((self.lo <= c) & (c <= self.hi))) if self.lo.size > 4 else any(
            lo <= c <= hi for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True)
        )
        return found == self.positive

    def matches_many(self, chars: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Vectorized `matches`: a 256-entry table lookup, ranges only for the rare wide chars."""
        if self.any:
            return np.ones(chars.shape, dtype=np.bool_)
        out: npt.NDArray[np.bool_] = self._table[np.minimum(chars, 255)]
        wide = np.flatnonzero(chars > 255)
        if wide.size:
            w = chars[wide]
            found = np.zeros(w.shape, dtype=np.bool_)
            for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True):
                if hi > 255:
                    found |= (w >= lo) & (w <= hi)
            out[wide] = found == self.positive
        return out

    @property
    def _table(self) -> npt.NDArray[np.bool_]:
        table = self.__dict__.get("_ascii")
        if table is None:
            codes = np.arange(256)
            found = np.zeros(256, dtype=np.bool_)
            for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True):
                found |= (codes >= lo) & (codes <= hi)
            table = found if self.positive else ~found
            object.__setattr__(self, "_ascii", table)
        return table

    def matches_partial_many(self, low: npt.NDArray[np.int64], high: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Vectorized `matches_partial` over precomputed code point spans (low > high: impossible)."""
        possible = low <= high
        if self.any:
            return possible
        hit = np.zeros(low.shape, dtype=np.bool_)
        for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True):
            hit |= (lo <= high) & (low <= hi)
        return possible & (hit if self.positive else ~hit)

    def matches_partial(self, partial: Partial) -> bool:
        """llama_grammar_match_partial_char: could the unfinished character satisfy this class?"""
        span = partial_range(partial)
        if span is None:
            return False
        low, high = span
        if self.any:
            return True
        for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True):
            if lo <= high and low <= hi:
                return self.positive
        return not self.positive


class CompiledGrammar:
    """Flattened rules plus the memoized state machine (shared by every sequence using it)."""

    def __init__(self, grammar: ParsedGrammar, root: str = "root") -> None:
        self.grammar = grammar
        self.elems: list[tuple[int, int]] = []
        self.rule_start: list[int] = []
        for rule in grammar.rules:
            self.rule_start.append(len(self.elems))
            self.elems.extend(rule)
        self.classes: dict[int, CharClass] = {}
        for pos, (kind, _) in enumerate(self.elems):
            if kind in (CHAR, CHAR_NOT, CHAR_ANY):
                self.classes[pos] = self._char_class(pos)
        self._successors: dict[Stack, tuple[Stack, ...]] = {}
        self.state_stacks: list[tuple[Stack, ...]] = [()]
        self._state_ids: dict[frozenset[Stack], int] = {frozenset(): DEAD}
        self._char_stacks: list[list[tuple[int, CharClass]]] = [[]]
        self._code_next: dict[tuple[int, int], int] = {}
        self._char_next: dict[tuple[int, int], int] = {}
        start = self.rule_start[grammar.symbol_ids[root]]
        stacks: list[Stack] = []
        pos = start
        while True:
            stack: Stack = () if self._is_end(pos) else (pos,)
            for s in self.advance(stack):
                if s not in stacks:
                    stacks.append(s)
            while not self._is_end(pos):
                pos += 1
            if self.elems[pos][0] == ALT:
                pos += 1
            else:
                break
        self.initial_state = self.intern(stacks)

    def _is_end(self, pos: int) -> bool:
        return self.elems[pos][0] in (END, ALT)

    def _char_class(self, pos: int) -> CharClass:
        kind = self.elems[pos][0]
        lo: list[int] = []
        hi: list[int] = []
        any_char = False
        p = pos
        while True:
            k, v = self.elems[p]
            if self.elems[p + 1][0] == CHAR_RNG_UPPER:
                lo.append(v)
                hi.append(self.elems[p + 1][1])
                p += 2
            elif k == CHAR_ANY:
                any_char = True
                p += 1
            else:
                lo.append(v)
                hi.append(v)
                p += 1
            if self.elems[p][0] != CHAR_ALT:
                break
        return CharClass(
            np.asarray(lo, dtype=np.int64),
            np.asarray(hi, dtype=np.int64),
            kind != CHAR_NOT,
            any_char,
            p,
            self._is_end(p),
        )

    def advance(self, stack: Stack) -> list[Stack]:
        """llama_grammar_advance_stack: expand rule references until every top is a terminal."""
        out: dict[Stack, None] = {}
        todo = [stack]
        seen: set[Stack] = set()
        elems = self.elems
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            if not cur:
                out[cur] = None
                continue
            pos = cur[-1]
            kind, value = elems[pos]
            if kind == RULE_REF:
                sub = self.rule_start[value]
                base = cur[:-1] if self._is_end(pos + 1) else (*cur[:-1], pos + 1)
                while True:
                    todo.append(base if self._is_end(sub) else (*base, sub))
                    while not self._is_end(sub):
                        sub += 1
                    if elems[sub][0] == ALT:
                        sub += 1
                    else:
                        break
            elif kind in (CHAR, CHAR_NOT, CHAR_ANY, TOKEN, TOKEN_NOT):
                out[cur] = None
            else:  # pragma: no cover - the parser never produces such stacks
                raise GrammarError(f"Failed to parse grammar: malformed stack at element {pos}")
        return list(out)

    def successors(self, stack: Stack) -> tuple[Stack, ...]:
        """The stacks after the terminal on top of `stack` matched one character/token."""
        hit = self._successors.get(stack)
        if hit is None:
            pos = stack[-1]
            if pos in self.classes:
                cls = self.classes[pos]
                rest = stack[:-1] if cls.after_is_end else (*stack[:-1], cls.after)
            else:
                rest = stack[:-1] if self._is_end(pos + 1) else (*stack[:-1], pos + 1)
            hit = self._successors[stack] = tuple(self.advance(rest))
        return hit

    def intern(self, stacks: list[Stack] | tuple[Stack, ...]) -> int:
        key = frozenset(stacks)
        sid = self._state_ids.get(key)
        if sid is None:
            if len(self.state_stacks) >= MAX_STATES:
                raise GrammarError("Failed to parse grammar: the grammar needs too many matcher states")
            sid = self._state_ids[key] = len(self.state_stacks)
            ordered = tuple(sorted(key))
            self.state_stacks.append(ordered)
            self._char_stacks.append([(i, self.classes[s[-1]]) for i, s in enumerate(ordered) if s and s[-1] in self.classes])
        return sid

    def char_stacks(self, state: int) -> list[tuple[int, CharClass]]:
        """(index in the state's stacks, terminal) for the stacks whose top is a character class."""
        return self._char_stacks[state]

    def token_stacks(self, state: int) -> list[tuple[int, int, Stack]]:
        """(kind, token id, stack) for stacks whose top is a `<[id]>` / `!<[id]>` terminal."""
        out = []
        for s in self.state_stacks[state]:
            if s and self.elems[s[-1]][0] in (TOKEN, TOKEN_NOT):
                kind, value = self.elems[s[-1]]
                out.append((kind, value, s))
        return out

    def can_end(self, state: int) -> bool:
        """True when the text so far is a complete match (an empty stack is present)."""
        return () in self.state_stacks[state]

    def step_code(self, state: int, code: int) -> int:
        """The state after a character matched the char stacks whose bits are set in `code`."""
        key = (state, code)
        nxt = self._code_next.get(key)
        if nxt is None:
            stacks = self.state_stacks[state]
            merged: dict[Stack, None] = {}
            for i, _ in self.char_stacks(state):
                if code >> i & 1:
                    for s in self.successors(stacks[i]):
                        merged[s] = None
            nxt = self._code_next[key] = self.intern(list(merged))
        return nxt

    def step_char(self, state: int, c: int) -> int:
        """llama_grammar_accept for one code point."""
        key = (state, c)
        nxt = self._char_next.get(key)
        if nxt is None:
            code = 0
            for i, cls in self.char_stacks(state):
                if cls.matches(c):
                    code |= 1 << i
            nxt = self._char_next[key] = self.step_code(state, code) if code else DEAD
        return nxt

    def step_chars(self, state: int, chars: list[int]) -> int:
        for c in chars:
            if state == DEAD:
                break
            state = self.step_char(state, c)
        return state

    def step_token(self, state: int, token: int) -> int:
        """The state after a whole token matched `<[id]>` / `!<[id]>` terminals."""
        merged: dict[Stack, None] = {}
        for kind, value, stack in self.token_stacks(state):
            if (kind == TOKEN) == (value == token):
                for s in self.successors(stack):
                    merged[s] = None
        return self.intern(list(merged)) if merged else DEAD

    def partial_ok(self, state: int, partial: Partial) -> bool:
        """Could a character left unfinished at a token's end still be accepted here?"""
        return any(cls.matches_partial(partial) for _, cls in self.char_stacks(state))

    def accepts_text(self, text: str) -> bool:
        """Does the whole `text` match the grammar? (used by tests and validators)"""
        state = self.step_chars(self.initial_state, [ord(ch) for ch in text])
        return state != DEAD and self.can_end(state)

    def accepts_prefix(self, text: str) -> bool:
        """Can `text` be extended to a match?"""
        return self.step_chars(self.initial_state, [ord(ch) for ch in text]) != DEAD

    def union(self, a: int, b: int) -> int:
        if a == DEAD:
            return b
        if b == DEAD or a == b:
            return a
        return self.intern(list(self.state_stacks[a]) + list(self.state_stacks[b]))

    def accept_token(self, state: int, token: int, chars: list[int]) -> int:
        """llama_grammar_accept_token: char stacks consume `chars`, token stacks match the id.

        Empty stacks never survive a token, even one that adds no complete character.
        """
        if chars:
            after_chars = self.step_chars(state, chars)
        else:
            stacks = self.state_stacks[state]
            after_chars = self.intern([stacks[i] for i, _ in self.char_stacks(state)])
        if not self.token_stacks(state):
            return after_chars
        return self.union(after_chars, self.step_token(state, token))
