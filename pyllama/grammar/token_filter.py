"""Which vocabulary tokens the grammar allows next: one boolean mask per matcher state.

llama.cpp tests every candidate token against every stack each step. We walk the
vocabulary's token trie instead, one level (character position) at a time: the trie nodes
whose parent is still alive are grouped by the matcher state they reached, and each group
advances with a handful of NumPy comparisons (one per character class on top of the
state's stacks). A shared prefix is advanced once for all tokens that start with it.
Results are cached per (state, unfinished-UTF-8) key, so a state seen before costs
nothing; inside a JSON string the state repeats for every token.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pyllama.grammar.matcher import DEAD, CompiledGrammar
from pyllama.grammar.parser import TOKEN
from pyllama.grammar.utf8 import NO_PARTIAL, Partial, decode_utf8
from pyllama.grammar.vocab_index import VocabIndex

Mask = npt.NDArray[np.bool_]
_MAX_CACHED = 2048  # packed bits: 6 KB each for 49k tokens, 32 KB for 262k


class TokenFilter:
    """Allowed-token masks for one compiled grammar over one vocabulary (shared, cached)."""

    def __init__(self, grammar: CompiledGrammar, vocab: VocabIndex) -> None:
        self.g = grammar
        self.v = vocab
        self._masks: dict[tuple[int, Partial], npt.NDArray[np.uint8]] = {}

    def cached_mask(self, state: int, partial: Partial) -> Mask | None:
        packed = self._masks.get((state, _key_partial(partial)))
        if packed is None:
            return None
        return np.unpackbits(packed, count=self.v.n_vocab).view(np.bool_)

    def mask(self, state: int, partial: Partial = NO_PARTIAL) -> Mask:
        key = (state, _key_partial(partial))
        packed = self._masks.get(key)
        if packed is not None:
            return np.unpackbits(packed, count=self.v.n_vocab).view(np.bool_)
        mask = self._walk(state) if key[1] == NO_PARTIAL else self._walk_after_partial(state, key[1])
        if len(self._masks) >= _MAX_CACHED:
            self._masks.clear()
        self._masks[key] = np.packbits(mask)
        return mask

    def _base(self, state: int) -> Mask:
        """EOG tokens and `<[id]>` terminals, which do not depend on the token's text."""
        v, g = self.v, self.g
        allowed = np.zeros(v.n_vocab, dtype=np.bool_)
        if g.can_end(state) and v.eog_array.size:
            allowed[v.eog_array] = True
        for kind, value, _ in g.token_stacks(state):
            if kind == TOKEN:
                if 0 <= value < v.n_vocab and v.token_matchable[value]:
                    allowed[value] = True
            else:
                hit = v.token_matchable.copy()
                if 0 <= value < v.n_vocab:
                    hit[value] = False
                allowed |= hit
        return allowed

    def _walk(self, start: int) -> Mask:
        """Advance the grammar down the token trie, one level (character position) at a time."""
        v, g = self.v, self.g
        allowed = self._base(start)
        if not g.char_stacks(start):
            return allowed  # only an empty stack or token terminals: no text can follow
        if v.partial_only.size:
            self._finish(v.partial_only, np.full(v.partial_only.size, start, dtype=np.int64), allowed)
        prev: npt.NDArray[np.int64] | None = None
        for d in range(len(v.trie_char)):
            chars = v.trie_char[d]
            if prev is None:
                state = self._advance(np.full(chars.size, start, dtype=np.int64), chars)
            else:
                parent_state = prev[v.trie_parent[d]]
                alive = np.flatnonzero(parent_state != DEAD)
                if not alive.size:
                    break
                state = np.zeros(chars.size, dtype=np.int64)
                state[alive] = self._advance(parent_state[alive], chars[alive])
            end_states = state[v.trie_end_nodes[d]]
            live = end_states != DEAD
            if live.any():
                self._finish(v.trie_end_tokens[d][live], end_states[live], allowed)
            prev = state
        return allowed

    def _finish(self, ids: npt.NDArray[np.int64], states: npt.NDArray[np.int64], allowed: Mask) -> None:
        """Tokens whose characters are all consumed: allowed unless an unfinished UTF-8 tail cannot fit."""
        v, g = self.v, self.g
        rem = v.part_rem[ids]
        plain = rem == 0
        allowed[ids[plain]] = True
        if plain.all():
            return
        rest, rest_states = ids[~plain], states[~plain]
        low, high = v.part_low[rest], v.part_high[rest]
        for s in np.flatnonzero(np.bincount(rest_states.astype(np.intp, copy=False))).tolist():
            sel = rest_states == s
            ok = np.zeros(int(sel.sum()), dtype=np.bool_)
            for _, cls in g.char_stacks(s):
                ok |= cls.matches_partial_many(low[sel], high[sel])
            allowed[rest[sel][ok]] = True

    def _advance(self, state: npt.NDArray[np.int64], chars: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        first = int(state[0])
        if bool((state == first).all()):
            return self._advance_group(first, chars)
        out = np.empty_like(state)
        for s in np.flatnonzero(np.bincount(state.astype(np.intp, copy=False))).tolist():
            sel = state == s
            out[sel] = self._advance_group(s, chars[sel])
        return out

    def _advance_group(self, state: int, chars: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Next state for each character: which char stacks matched -> memoized transition."""
        g = self.g
        stacks = g.char_stacks(state)
        if not stacks:
            return np.zeros(chars.shape, dtype=np.int64)
        if len(stacks) > 16:
            uniq, inv = np.unique(chars, return_inverse=True)
            nxt = np.asarray([g.step_char(state, int(c)) for c in uniq.tolist()], dtype=np.int64)
            return nxt[inv]
        code = np.zeros(chars.shape, dtype=np.int64)
        for i, cls in stacks:
            code |= cls.matches_many(chars).astype(np.int64) << i
        present = np.flatnonzero(np.bincount(code.astype(np.intp, copy=False))).tolist()
        lut = np.zeros(max(present) + 1, dtype=np.int64)
        for c in present:
            lut[c] = g.step_code(state, c) if c else DEAD
        return lut[code]

    def _walk_after_partial(self, start: int, partial: Partial) -> Mask:
        """The grammar is inside a multi-byte character: only continuation-byte tokens can fit."""
        v, g = self.v, self.g
        allowed = np.zeros(v.n_vocab, dtype=np.bool_)
        if g.can_end(start) and v.eog_array.size:
            allowed[v.eog_array] = True
        for t in v.cont_start:
            cps, tail = decode_utf8(v.pieces[t], partial)
            if tail.n_remain < 0:
                continue
            state = g.step_chars(start, cps)
            if state != DEAD and (tail.n_remain == 0 or g.partial_ok(state, tail)):
                allowed[t] = True
        return allowed

    def token_allowed(self, state: int, partial: Partial, token: int) -> bool:
        """One token, without computing the whole mask (the sampled-token-first check)."""
        v, g = self.v, self.g
        mask = self.cached_mask(state, partial)
        if mask is not None:
            return bool(mask[token])
        if not 0 <= token < v.n_vocab:
            return False
        if token in v.eog_ids:
            return g.can_end(state)
        for kind, value, _ in g.token_stacks(state):
            if v.token_matchable[token] and (kind == TOKEN) == (value == token):
                return True
        piece = v.pieces[token]
        if not piece or piece[0] == 0:
            return False
        p = _key_partial(partial)
        if p == NO_PARTIAL:
            if not v.usable[token]:
                return False
            cps = v.code_points(token)
            tail = Partial(int(v.part_val[token]), int(v.part_rem[token]))
        else:
            cps, tail = decode_utf8(piece, p)
            if tail.n_remain < 0:
                return False
        end = g.step_chars(state, cps)
        return end != DEAD and (tail.n_remain == 0 or g.partial_ok(end, tail))


def _key_partial(partial: Partial) -> Partial:
    """Decoding after an invalid or finished sequence is the same as starting fresh."""
    return partial if partial.n_remain > 0 else NO_PARTIAL
