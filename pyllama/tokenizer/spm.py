"""SentencePiece-style BPE (llm_tokenizer_spm_session): score-driven bigram merging.

Start from single characters; repeatedly merge the adjacent pair whose concatenation
is a token with the highest score (leftmost on ties), as long as any such pair exists.
Characters that never became part of a token fall back to byte tokens <0xXX>.

Speed: merges never cross a boundary between two characters that no token contains
side by side, so the text is cut at such boundaries into independent segments, which
are tokenized (and cached) separately. That is exact, not an approximation. Cuts before
U+2581 come from a small regex; for long inputs a table of every character pair inside
a token finds the rest.
"""

from __future__ import annotations

import heapq
import operator
import re
from itertools import chain

from pyllama.errors import InvalidRequestError
from pyllama.tokenizer.vocab import Vocab

_CACHE_LIMIT = 100_000
# After merging this many characters, build the character-pair table (~0.5 s for Gemma).
_LONG_TEXT = 50_000


class SPMTokenizer:
    """Tokenizes raw-text fragments (spaces already escaped to U+2581) for an SPM vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.t2i = vocab.token_to_id
        self.scores = vocab.scores
        self._cache: dict[str, tuple[int, ...]] = {}
        self._barrier = self._space_barrier(vocab.texts)
        self._pairs: frozenset[str] | None = None
        self._merged_chars = 0

    @staticmethod
    def _space_barrier(texts: list[str]) -> re.Pattern[str]:
        """Where a segment may start: before a U+2581 whose left neighbour never precedes
        U+2581 inside any token (so no merge can ever join the two)."""
        left: set[str] = set()
        for t in texts:
            if "\u2581" in t[1:]:
                left.update(t[i - 1] for i in range(1, len(t)) if t[i] == "\u2581")
        cls = "".join(re.escape(c) for c in sorted(left))
        return re.compile(f"(?<=[^{cls}])(?=\u2581)" if cls else "(?<=.)(?=\u2581)", re.S)

    def byte_to_token(self, b: int) -> int:
        """llama_vocab::byte_to_token for SPM/UGM: <0xXX>, else the raw character."""
        tid = self.t2i.get(f"<0x{b:02X}>")
        if tid is None and b < 0x80:
            tid = self.t2i.get(chr(b))
        if tid is None:
            raise InvalidRequestError(
                f"cannot tokenize byte 0x{b:02X}: the vocabulary has neither <0x{b:02X}> nor a byte token for it"
            )
        return tid

    def encode(self, text: str, out: list[int]) -> None:
        if len(text) < 64:
            out.extend(self._encode_segment(text))
            return
        if self._merged_chars > _LONG_TEXT and self._pairs is None:
            # every adjacent character pair inside any token; built once the tokenizer has
            # merged a lot of text (so short prompts never pay for it)
            joined = "\x00".join(self.vocab.texts)
            self._pairs = frozenset(map(operator.add, joined, joined[1:]))
        for segment in self._barrier.split(text):
            out.extend(self._encode_segment(segment))

    def _encode_segment(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            pairs = self._pairs
            if pairs is None or len(text) < 8:
                ids = tuple(self._merge(text))
            else:
                # cut between characters that no token has side by side: no merge can
                # cross such a cut, so the pieces tokenize independently (and cache well)
                cuts = [i for i, pr in enumerate(map(operator.add, text, text[1:]), 1) if pr not in pairs]
                if not cuts:
                    ids = tuple(self._merge(text))
                else:
                    bounds = zip([0, *cuts], [*cuts, len(text)], strict=True)
                    ids = tuple(chain.from_iterable(self._encode_piece(text[a:b]) for a, b in bounds))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def _encode_piece(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = tuple(self._merge(text))
        return ids

    def _merge(self, text: str) -> list[int]:
        n = len(text)
        if n == 0:
            return []
        self._merged_chars += n
        t2i, scores = self.t2i, self.scores
        length = [1] * n
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []
        push, pop = heapq.heappush, heapq.heappop
        for i in range(n - 1):
            tid = t2i.get(text[i : i + 2])
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, 2))
        heapq.heapify(heap)
        while heap:
            _, left, right, size = pop(heap)
            ll, rl = length[left], length[right]
            if ll == 0 or rl == 0 or ll + rl != size:
                continue
            length[left] = size
            length[right] = 0
            r2 = nxt[right]
            nxt[left] = r2
            if r2 >= 0:
                prv[r2] = left
            p = prv[left]
            if p >= 0:
                s = length[p] + size
                tid = t2i.get(text[p : p + s])
                if tid is not None:
                    push(heap, (-scores[tid], p, left, s))
            if r2 >= 0:
                s = size + length[r2]
                tid = t2i.get(text[left : left + s])
                if tid is not None:
                    push(heap, (-scores[tid], left, r2, s))
        out: list[int] = []
        i = 0
        while i != -1:
            piece = text[i : i + length[i]]
            tid = t2i.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self.byte_to_token(b) for b in piece.encode("utf-8"))
            i = nxt[i]
        return out
