"""Byte-pair encoding (llm_tokenizer_bpe_session) with a per-word cache.

Each pre-tokenized word is byte-encoded (GPT-2's byte -> printable map), split into
characters, and merged: always the adjacent pair with the lowest merge rank, the
leftmost on ties. That is what llama.cpp's priority queue of (rank, left index) does;
we keep the ranks of adjacent pairs in a list and let `min` + `index` (C speed) find
the next merge. Words repeat a lot in real text, so finished words are cached.
"""

from __future__ import annotations

import heapq
from itertools import chain

from pyllama.tokenizer.pretokenize import PreTokenizer, pre_tokenizer_for
from pyllama.tokenizer.unicode import WHITESPACE, byte_encode, tolower
from pyllama.tokenizer.vocab import Vocab

_NO_RANK = 1 << 62
_CACHE_LIMIT = 200_000


def merge_ranks(merges: list[str]) -> dict[tuple[str, str], int]:
    """bpe_ranks: "left right" at the first space after position 0; first rank wins."""
    ranks: dict[tuple[str, str], int] = {}
    for i, m in enumerate(merges):
        p = m.find(" ", 1)
        key = (m[:p], m[p + 1 :]) if p >= 0 else ("", "")
        if key not in ranks:
            ranks[key] = i
    return ranks


_LONG_WORD = 256  # symbols; longer words use the heap, whose cost grows as n log n, not n^2


def bpe_merge(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge adjacent symbols by rank until no pair has a rank (modifies `parts`)."""
    n = len(parts)
    if n < 2:
        return parts
    if n > _LONG_WORD:
        return bpe_merge_heap(parts, ranks)
    get = ranks.get
    pr = [get((parts[i], parts[i + 1]), _NO_RANK) for i in range(n - 1)]
    while pr:
        best = min(pr)
        if best == _NO_RANK:
            break
        i = pr.index(best)
        parts[i] += parts[i + 1]
        del parts[i + 1]
        del pr[i]
        if i > 0:
            pr[i - 1] = get((parts[i - 1], parts[i]), _NO_RANK)
        if i < len(pr):
            pr[i] = get((parts[i], parts[i + 1]), _NO_RANK)
    return parts


def bpe_merge_heap(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """The same merges for a long word, as llama.cpp does them: a heap of (rank, left index)
    over a linked list of symbols. (min + index rescans the whole word per merge: a 200 kB
    run of letters took minutes.) An entry is stale once either symbol has grown."""
    n = len(parts)
    sym = list(parts)
    nxt = [*range(1, n), -1]
    prv = list(range(-1, n - 1))
    alive = [True] * n
    get = ranks.get
    heap: list[tuple[int, int, str, str]] = []
    for i in range(n - 1):
        rank = get((sym[i], sym[i + 1]))
        if rank is not None:
            heap.append((rank, i, sym[i], sym[i + 1]))
    heapq.heapify(heap)
    while heap:
        _, i, left, right = heapq.heappop(heap)
        j = nxt[i]
        if not alive[i] or j < 0 or sym[i] != left or sym[j] != right:
            continue
        sym[i] = left + right
        alive[j] = False
        k = nxt[j]
        nxt[i] = k
        if k >= 0:
            prv[k] = i
            rank = get((sym[i], sym[k]))
            if rank is not None:
                heapq.heappush(heap, (rank, i, sym[i], sym[k]))
        p = prv[i]
        if p >= 0:
            rank = get((sym[p], sym[i]))
            if rank is not None:
                heapq.heappush(heap, (rank, p, sym[p], sym[i]))
    return [s for s, keep in zip(sym, alive, strict=True) if keep]


class BPETokenizer:
    """Tokenizes raw-text fragments for a BPE vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.t2i = vocab.token_to_id
        self.ranks = merge_ranks(vocab.merges)
        self.pre: PreTokenizer
        self.pre, self.byte_encode = pre_tokenizer_for(vocab.pre_type)
        self.ignore_merges = vocab.ignore_merges
        self.gemma4 = vocab.pre_type == "gemma4"
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str, out: list[int]) -> None:
        """Append the ids of one raw-text fragment (after special-token splitting)."""
        cache = self._cache
        words = self.pre.split(text)
        missing = [w for w in set(words) if w not in cache]
        if missing:
            if len(cache) + len(missing) > _CACHE_LIMIT:
                cache.clear()
                missing = list(set(words))
            for w in missing:
                cache[w] = self._encode_word(w)
        out.extend(chain.from_iterable(map(cache.__getitem__, words)))

    def _encode_word(self, word: str) -> tuple[int, ...]:
        t2i = self.t2i
        enc = byte_encode(word) if self.byte_encode else word
        if not enc:
            return ()
        if self.ignore_merges and enc in t2i:
            return (t2i[enc],)
        if self.gemma4 and not enc.strip("\n") and enc in t2i:
            return (t2i[enc],)
        ids: list[int] = []
        for sym in bpe_merge(list(enc), self.ranks):
            tid = t2i.get(sym)
            if tid is not None:
                ids.append(tid)
                continue
            # a symbol that is not a token: llama.cpp looks up each of its UTF-8 bytes
            for b in sym.encode("utf-8"):
                key = (chr(b) if b < 0x80 else "") if self.byte_encode else f"<0x{b:02X}>"
                btid = t2i.get(key) if key else None
                if btid is not None:
                    ids.append(btid)
        return tuple(ids)


class WhitespaceBPETokenizer(BPETokenizer):
    """llm_tokenizer_whitespace_session: drop whitespace, BPE each non-space run."""

    def encode(self, text: str, out: list[int]) -> None:
        seg: list[str] = []
        for ch in text:
            if ord(ch) in WHITESPACE:
                if seg:
                    super().encode("".join(seg), out)
                    seg = []
            else:
                seg.append(chr(tolower(ord(ch))) if self.vocab.lowercase else ch)
        if seg:
            super().encode("".join(seg), out)


class HybridDNATokenizer(BPETokenizer):
    """llm_tokenizer_hybriddna_session: <dna>...</dna> spans become 6-mer tokens."""

    _K = 6
    _MARKER = "\ue000"

    def encode(self, text: str, out: list[int]) -> None:
        t2i = self.t2i
        begin, end_tag, oov = t2i.get("<dna>"), t2i.get("</dna>"), t2i.get("<oov>")
        if begin is None or end_tag is None or oov is None:
            super().encode(text, out)
            return
        pos = 0
        while pos < len(text):
            start = text.find("<dna>", pos)
            if start < 0:
                super().encode(text[pos:], out)
                break
            if start > pos:
                super().encode(text[pos:start], out)
            out.append(begin)
            content_start = start + len("<dna>")
            end = text.find("</dna>", content_start)
            content_end = len(text) if end < 0 else end
            self._kmers(text[content_start:content_end], oov, out)
            if end < 0:
                break
            out.append(end_tag)
            pos = end + len("</dna>")

    def _kmers(self, raw: str, oov: int, out: list[int]) -> None:
        # C++ works on bytes and upper-cases ASCII a-z only
        seq = "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in raw).encode("utf-8")
        k = self._K
        i = 0
        while i + k <= len(seq):
            out.append(self.t2i.get(seq[i : i + k].decode("utf-8", "replace") + self._MARKER, oov))
            i += k
        if i < len(seq):
            kmer = seq[i:] + b"A" * (k - (len(seq) - i))
            out.append(self.t2i.get(kmer.decode("utf-8", "replace") + self._MARKER, oov))
