"""Unigram (T5-style SentencePiece): llm_tokenizer_ugm_session.

The input is normalized first: user-defined tokens pass through untouched, the
precompiled charsmap (a SentencePiece XOR-compressed double array, XCDA) rewrites
prefixes, spaces become U+2581 (optionally merged, prepended or appended). Then a
Viterbi pass over byte offsets keeps, for every end offset, the best-scoring way to get
there; characters no token covers cost min_score - 10 and come out as one [UNK] per run.
All offsets are UTF-8 byte offsets, as in llama.cpp.
"""

from __future__ import annotations

import struct

import numpy as np

from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.tokenizer.vocab import ATTR_NORMAL, ATTR_UNUSED, ATTR_USER_DEFINED, Vocab

_SPACE = "\u2581".encode()


def _utf8_len(b: int) -> int:
    return (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)[b >> 4]


class _Charsmap:
    """The XCDA view over precompiled_charsmap (see llama.cpp's xcda_array_view)."""

    def __init__(self, blob: bytes) -> None:
        (size,) = struct.unpack_from("<I", blob, 0)
        if size + 4 >= len(blob):
            raise ModelLoadError("precompiled_charsmap: XCDA size points past the end of the blob")
        self.xcda = np.frombuffer(blob, dtype="<u4", count=size // 4, offset=4).tolist()
        self.replacements = blob[4 + size :]

    def _node(self, i: int) -> int:
        if i >= len(self.xcda):
            raise InvalidRequestError("precompiled charsmap: index out of bounds in XCDA array")
        return int(self.xcda[i])

    def _base(self, i: int) -> int:
        p = self._node(i)
        return (p >> 10) << ((p & (1 << 9)) >> 6)

    def longest(self, data: bytes, off: int) -> tuple[bytes, int] | None:
        """(replacement, consumed bytes) for the longest charsmap entry at `off`, if any."""
        node = self._base(0)
        best_len = 0
        best_off = 0
        for p in range(off, len(data)):
            c = data[p]
            if c == 0:
                break
            node ^= c
            packed = self._node(node)
            if packed & ((1 << 31) | 0xFF) != c:
                break
            leaf = (packed >> 8) & 1
            node ^= self._base(node)
            if leaf:
                best_len = p - off + 1
                best_off = self._node(node) & ((1 << 31) - 1)
        if best_len == 0:
            return None
        if best_off >= len(self.replacements):
            raise InvalidRequestError("precompiled charsmap: replacement index out of bounds")
        end = self.replacements.find(b"\x00", best_off)
        if end < 0:
            raise InvalidRequestError("precompiled charsmap: unterminated replacement string")
        return self.replacements[best_off:end], best_len


class UGMTokenizer:
    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.charsmap = _Charsmap(vocab.precompiled_charsmap) if vocab.precompiled_charsmap else None
        self.tokens: dict[bytes, int] = {}
        self.prefixes: set[bytes] = set()
        self.user_prefixes: set[bytes] = set()
        self.user_defined = [bool(a & ATTR_USER_DEFINED) for a in vocab.attrs]
        min_score = np.float32(np.finfo(np.float32).max)
        for tid, text in enumerate(vocab.texts):
            attr = vocab.attrs[tid]
            raw = text.encode("utf-8")
            if attr & ATTR_NORMAL:
                min_score = min(min_score, np.float32(vocab.scores[tid]))
            if attr & (ATTR_NORMAL | ATTR_USER_DEFINED | ATTR_UNUSED):
                self.tokens[raw] = tid
                self.prefixes.update(raw[:i] for i in range(1, len(raw) + 1))
            if attr & ATTR_USER_DEFINED:
                self.user_prefixes.update(raw[:i] for i in range(1, len(raw) + 1))
        self.unknown_score = float(np.float32(min_score - np.float32(10.0)))

    def _normalize_prefix(self, data: bytes, off: int) -> tuple[bytes, int]:
        n = 0
        while off + n < len(data) and data[off : off + n + 1] in self.user_prefixes:
            n += 1
        if n > 0:
            return data[off : off + n], n
        if self.charsmap is not None:
            found = self.charsmap.longest(data, off)
            if found is not None:
                return found
        ln = _utf8_len(data[off])
        chunk = data[off : off + ln]
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return "\ufffd".encode(), 1
        return chunk, ln

    def normalize(self, text: str) -> bytes:
        v = self.vocab
        data = text.encode("utf-8")
        space = _SPACE if v.escape_whitespaces else b" "
        prepend = not v.treat_whitespace_as_suffix and v.add_space_prefix
        append = v.treat_whitespace_as_suffix and v.add_space_prefix
        merge = v.remove_extra_whitespaces
        out = bytearray()
        space_prepended = False
        in_word = False
        off = 0
        while off < len(data):
            norm, consumed = self._normalize_prefix(data, off)
            for c in norm:
                if c != 0x20:
                    if not in_word:
                        in_word = True
                        if (prepend and not space_prepended) or merge:
                            out += space
                            space_prepended = True
                    out.append(c)
                else:
                    in_word = False
                    if not merge:
                        out += space
            off += consumed
        if append:
            out += space
        return bytes(out)

    def encode(self, text: str, out: list[int]) -> None:
        data = self.normalize(text)
        n = len(data)
        if n == 0:
            return
        unk = self.vocab.ids["unk"]
        if unk is None:
            raise InvalidRequestError("UGM vocabulary has no unknown token")
        scores, user, tokens, prefixes = self.vocab.scores, self.user_defined, self.tokens, self.prefixes
        best_id = [unk] * (n + 1)
        best_from = [0] * (n + 1)
        best = [-float("inf")] * (n + 1)
        best[0] = 0.0
        off = 0
        while off < n:
            ulen = min(_utf8_len(data[off]), n - off)
            cur = best[off]
            single = False
            ln = 1
            while off + ln <= n:
                piece = data[off : off + ln]
                if piece not in prefixes:
                    break
                tid = tokens.get(piece)
                if tid is not None:
                    if ln == ulen:
                        single = True
                    cand = cur + (0.0 if user[tid] else scores[tid])
                    if cand > best[off + ln]:
                        best[off + ln], best_id[off + ln], best_from[off + ln] = cand, tid, off
                ln += 1
            if not single:
                cand = cur + self.unknown_score
                end = off + ulen
                if cand > best[end]:
                    best[end], best_id[end], best_from[end] = cand, unk, off
            off += ulen
        rev: list[int] = []
        pos = n
        prev_unk = False
        while True:
            tid = best_id[pos]
            is_unk = tid == unk
            if not (prev_unk and is_unk):
                rev.append(tid)
            if best_from[pos] == 0:
                break
            prev_unk = is_unk
            pos = best_from[pos]
        out.extend(reversed(rev))
