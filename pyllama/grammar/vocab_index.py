"""Every vocabulary piece decoded to code points once, and a token trie over them.

The code points sit in one flat array with per-token offsets and lengths (CSR, no
padding). The trie shares common prefixes so the token filter advances the grammar once
per distinct prefix rather than once per token; it is stored level by level as NumPy
arrays (for each depth: every node's parent at the previous depth and its character),
so a whole level is advanced with a few vectorized operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pyllama.grammar.utf8 import Partial, decode_utf8, partial_range

I64 = npt.NDArray[np.int64]


class VocabIndex:
    def __init__(self, pieces: Sequence[bytes], eog_ids: frozenset[int]) -> None:
        self.pieces = pieces
        self.n_vocab = n = len(pieces)
        self.eog_ids = eog_ids
        texts: list[str] = []
        lens = np.zeros(n, dtype=np.int64)
        part_val = np.zeros(n, dtype=np.int64)
        part_rem = np.zeros(n, dtype=np.int64)
        usable = np.zeros(n, dtype=np.bool_)  # non-empty, not EOG, no invalid UTF-8
        self.cont_start: list[int] = []  # tokens opening with a continuation byte
        for i, piece in enumerate(pieces):
            if i in eog_ids or not piece or piece[0] == 0:
                texts.append("")
                continue
            if 0x80 <= piece[0] <= 0xBF:
                self.cont_start.append(i)
            try:
                if 0 in piece:
                    raise UnicodeDecodeError("utf-8", piece, 0, 1, "NUL")
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                cps, partial = decode_utf8(piece)
                if partial.n_remain < 0 or any(c > 0x10FFFF for c in cps):
                    texts.append("")
                    continue
                text = "".join(map(chr, cps))
                part_val[i], part_rem[i] = partial
            texts.append(text)
            lens[i] = len(text)
            usable[i] = True
        blob = "".join(texts).encode("utf-32-le", errors="surrogatepass")
        self.flat: I64 = np.frombuffer(blob, dtype=np.uint32).astype(np.int64)
        self.lens: I64 = lens
        self.offsets: I64 = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if n else lens
        self.part_val: I64 = part_val
        self.part_rem: I64 = part_rem
        # code points an unfinished trailing character could still become ([low, high]; low > high: none)
        self.part_low: I64 = np.ones(n, dtype=np.int64)
        self.part_high: I64 = np.zeros(n, dtype=np.int64)
        for t in np.flatnonzero(part_rem > 0).tolist():
            span = partial_range(Partial(int(part_val[t]), int(part_rem[t])))
            if span is not None:
                self.part_low[t], self.part_high[t] = span
        self.usable = usable
        # may match a `<[id]>` terminal: llama.cpp rejects a token that is only an unfinished character
        self.token_matchable = usable & ~((lens == 0) & (part_rem != 0))
        usable_ids = np.flatnonzero(usable).astype(np.int64)
        by_len = np.argsort(-lens[usable_ids], kind="stable")
        self.walk_ids: I64 = usable_ids[by_len]  # longest first (see TokenFilter._walk)
        self.walk_lens: I64 = lens[self.walk_ids]
        self.walk_offsets: I64 = self.offsets[self.walk_ids]
        self.eog_array: I64 = np.asarray(sorted(t for t in eog_ids if 0 <= t < n), dtype=np.int64)
        self.max_len = int(lens.max()) if n else 0
        self._build_trie()

    def _build_trie(self) -> None:
        """Per depth d: node parents (index at depth d-1), node characters, and the tokens whose
        last character is at depth d with their node (usable tokens only)."""
        self.trie_parent: list[I64] = []
        self.trie_char: list[I64] = []
        self.trie_end_tokens: list[I64] = []
        self.trie_end_nodes: list[I64] = []
        ids, lens, offs = self.walk_ids, self.walk_lens, self.walk_offsets  # longest first
        node_prev = np.zeros(ids.size, dtype=np.int64)
        shift = np.int64(21)  # code points < 2**21
        for d in range(self.max_len):
            k = int(np.searchsorted(-lens, -d, side="left"))  # tokens with len > d
            if k == 0:
                break
            chars = self.flat[offs[:k] + d]
            keys = (node_prev[:k] << shift) | chars
            uniq, inverse = np.unique(keys, return_inverse=True)
            inverse = inverse.reshape(-1).astype(np.int64)
            self.trie_parent.append((uniq >> shift).astype(np.int64))
            self.trie_char.append((uniq & ((1 << 21) - 1)).astype(np.int64))
            ends = np.flatnonzero(lens[:k] == d + 1)
            self.trie_end_tokens.append(ids[ends])
            self.trie_end_nodes.append(inverse[ends])
            node_prev = inverse
        self.partial_only = ids[lens == 0]  # tokens that are only an unfinished character

    def code_points(self, token: int) -> list[int]:
        start = int(self.offsets[token])
        out: list[int] = self.flat[start : start + int(self.lens[token])].tolist()
        return out


_CACHE: dict[tuple[int, frozenset[int]], VocabIndex] = {}


def vocab_index(pieces: Sequence[bytes], eog_ids: frozenset[int]) -> VocabIndex:
    """The index for a vocabulary, built once per (pieces object, EOG set)."""
    key = (id(pieces), eog_ids)
    hit = _CACHE.get(key)
    if hit is not None and hit.pieces is pieces:
        return hit
    if len(_CACHE) >= 4:
        _CACHE.clear()
    index = _CACHE[key] = VocabIndex(pieces, eog_ids)
    return index
