"""A grammar attached to one generating sequence: the sampler's TokenConstraint.

Holds the matcher state and any unfinished UTF-8 bytes, answers "is this token allowed"
(checked first for the sampled token, as llama.cpp does) and "which tokens are allowed"
(the cached mask, used when the sampled token was rejected), and advances on accepted
tokens. Lazy grammars stay inactive until a trigger word/pattern/token appears.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pyllama.grammar.matcher import DEAD, CompiledGrammar
from pyllama.grammar.parser import GrammarError, TokenLookup, parse_grammar
from pyllama.grammar.token_filter import TokenFilter
from pyllama.grammar.utf8 import NO_PARTIAL, Partial, decode_utf8
from pyllama.grammar.vocab_index import VocabIndex, vocab_index

_COMPILED: dict[tuple[str, str], CompiledGrammar] = {}
_FILTERS: dict[tuple[int, int], TokenFilter] = {}


def compile_grammar(text: str, *, root: str = "root", token_lookup: TokenLookup | None = None) -> CompiledGrammar:
    """Parse and compile GBNF, cached by text so repeated requests share the matcher's memo."""
    key = (text, root)
    hit = _COMPILED.get(key)
    if hit is None:
        if len(_COMPILED) >= 32:
            _COMPILED.clear()
            _FILTERS.clear()
        hit = _COMPILED[key] = CompiledGrammar(parse_grammar(text, token_lookup=token_lookup, root=root), root)
    return hit


def token_filter(grammar: CompiledGrammar, vocab: VocabIndex) -> TokenFilter:
    key = (id(grammar), id(vocab))
    hit = _FILTERS.get(key)
    if hit is None or hit.g is not grammar or hit.v is not vocab:
        hit = _FILTERS[key] = TokenFilter(grammar, vocab)
    return hit


def piece_lookup(pieces: Sequence[bytes]) -> TokenLookup:
    """`<token>` in a grammar names the token whose piece is exactly that text."""
    table: dict[bytes, int] = {}

    def lookup(text: str) -> int | None:
        if not table:
            for i, p in enumerate(pieces):
                table.setdefault(p, i)
        return table.get(text.encode("utf-8"))

    return lookup


class GrammarConstraint:
    def __init__(
        self,
        grammar: CompiledGrammar,
        vocab: VocabIndex,
        *,
        lazy: bool = False,
        trigger_patterns: Sequence[str] = (),
        trigger_tokens: Sequence[int] = (),
    ) -> None:
        self.grammar = grammar
        self.vocab = vocab
        self.filter = token_filter(grammar, vocab)
        self.lazy = lazy
        self.trigger_tokens = frozenset(int(t) for t in trigger_tokens)
        self.trigger_patterns = [re.compile(p.encode("utf-8")) for p in trigger_patterns]
        self.reset()

    @classmethod
    def from_text(
        cls,
        text: str,
        pieces: Sequence[bytes],
        eog_ids: frozenset[int] = frozenset(),
        *,
        lazy: bool = False,
        trigger_words: Sequence[str] = (),
        trigger_tokens: Sequence[int] = (),
        trigger_patterns: Sequence[str] = (),
        root: str = "root",
    ) -> GrammarConstraint:
        compiled = compile_grammar(text, root=root, token_lookup=piece_lookup(pieces))
        patterns = list(trigger_patterns)
        if trigger_words:
            words = "|".join(re.escape(w) for w in trigger_words)
            patterns.append(r"[\s\S]*?(" + words + r")[\s\S]*")
        if lazy and not patterns and not trigger_tokens:
            raise GrammarError("Failed to parse grammar: no triggers set for lazy grammar")
        return cls(compiled, vocab_index(pieces, eog_ids), lazy=lazy, trigger_patterns=patterns, trigger_tokens=trigger_tokens)

    def reset(self) -> None:
        self.state = self.grammar.initial_state
        self.partial: Partial = NO_PARTIAL
        self.awaiting_trigger = self.lazy
        self._buffer = b""
        self._buffered: list[tuple[int, int, int]] = []  # (token, start, end) in _buffer

    def allows(self, token: int) -> bool:
        if self.awaiting_trigger:
            return True
        return self.filter.token_allowed(self.state, self.partial, token)

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        if self.awaiting_trigger:
            return np.ones(self.vocab.n_vocab, dtype=np.bool_)
        return self.filter.mask(self.state, self.partial)

    def is_complete(self) -> bool:
        """The output so far is a full match (the grammar allows end of generation)."""
        return not self.awaiting_trigger and self.grammar.can_end(self.state)

    def accept(self, token: int) -> None:
        piece = self.vocab.pieces[token] if 0 <= token < self.vocab.n_vocab else b""
        if self.awaiting_trigger:
            self._await(token, piece)
            return
        if token in self.vocab.eog_ids:
            if self.grammar.can_end(self.state):
                return
            raise GrammarError("Failed to parse grammar: end of generation accepted before the grammar was complete")
        self._accept_piece(token, piece)

    def _accept_piece(self, token: int, piece: bytes) -> None:
        chars, tail = decode_utf8(piece, self.partial)
        new = self.grammar.accept_token(self.state, token, chars)
        if new == DEAD:
            shown = piece.decode("utf-8", errors="replace")
            raise GrammarError(f"Unexpected empty grammar stack after accepting piece: {shown!r} ({token})")
        self.state = new
        self.partial = tail

    def _await(self, token: int, piece: bytes) -> None:
        if token in self.trigger_tokens:
            self.awaiting_trigger = False
            self._buffer = b""
            self._buffered = []
            self._accept_piece(token, piece)
            return
        start_pos = len(self._buffer)
        self._buffer += piece
        self._buffered.append((token, start_pos, len(self._buffer)))
        for pattern in self.trigger_patterns:
            start = _trigger_start(pattern, self._buffer)
            if start is None:
                continue
            self.awaiting_trigger = False
            for tok, tok_start, tok_end in self._buffered:
                if tok_end <= start:
                    continue
                self._accept_piece(tok, self._buffer[max(tok_start, start) : tok_end])
            self._buffer = b""
            self._buffered = []
            return


def _trigger_start(pattern: re.Pattern[bytes], text: bytes) -> int | None:
    """Where constrained output starts: the first non-empty group of the match, else the match."""
    src = pattern.pattern
    anchored = src.startswith(b"^") and src.endswith(b"$")
    match = pattern.fullmatch(text) if anchored else None
    if match is None:
        match = pattern.search(text)
    if match is None:
        return None
    for i in range(1, (match.lastindex or 0) + 1):
        if match.group(i):
            return match.start(i)
    return match.start()
