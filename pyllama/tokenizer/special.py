"""Splitting text on special tokens before tokenization (tokenizer_st_partition).

llama.cpp walks its special-token cache longest first and, for each token, cuts every
remaining raw-text fragment at each occurrence, honouring the token's lstrip/rstrip
attributes. Control and unknown tokens take part only with parse_special; user-defined
tokens always do. We run the same algorithm, but only over the special tokens that
actually occur in the text (found with one compiled alternation), so a 262k vocabulary
with 6k special tokens costs a regex scan instead of 6k substring searches.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any

from pyllama.tokenizer.vocab import ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN, Vocab

# C isspace() in the "C" locale, which llama.cpp uses for lstrip/rstrip
_ISSPACE = frozenset(" \t\n\v\f\r")

# Above this many characters the trie regex (compiled once, ~0.3 s for Gemma) pays off.
_LONG_TEXT = 20_000

# A fragment is either a token id (int) or a (start, end) span of raw text.
Fragment = int | tuple[int, int]


class SpecialSplitter:
    """Cuts text on special tokens exactly like llama_vocab::impl::tokenizer_st_partition."""

    def __init__(self, vocab: Vocab) -> None:
        self._order = list(vocab.special_tokens)
        self._rank = {tid: i for i, tid in enumerate(self._order)}
        self._texts = vocab.texts
        self._attrs = vocab.attrs
        # text -> id; with duplicate texts llama.cpp keeps both ids in its cache
        self._by_text: dict[str, list[int]] = {}
        for tid in self._order:
            self._by_text.setdefault(vocab.texts[tid], []).append(tid)
        self._index: tuple[re.Pattern[str], frozenset[str]] | None = None
        self._prefixes: dict[str, tuple[str, ...]] = {}
        self._trie: re.Pattern[str] | None = None

    def _built_index(self) -> tuple[re.Pattern[str], frozenset[str]]:
        """A regex for the 1- and 2-char prefixes of special tokens, and all their prefixes."""
        if self._index is None:
            prefixes = frozenset(t[:i] for t in self._by_text for i in range(1, len(t) + 1))
            alts = sorted({t[:2] for t in self._by_text}, key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, alts)) if alts else "(?!)")
            self._index = (pattern, prefixes)
        return self._index

    def _special_prefixes(self, tok: str) -> tuple[str, ...]:
        found = self._prefixes.get(tok)
        if found is None:
            found = tuple(tok[:i] for i in range(1, len(tok)) if tok[:i] in self._by_text)
            self._prefixes[tok] = found
        return found

    def _trie_pattern(self) -> re.Pattern[str]:
        """One regex for all special tokens, shaped as a trie so that at each position it
        costs one branch per character, and wrapped in a lookahead to see every start."""
        if self._trie is None:
            trie: dict[str, Any] = {}
            for t in self._by_text:
                node = trie
                for ch in t:
                    node = node.setdefault(ch, {})
                node[""] = {}

            def emit(node: dict[str, Any]) -> str:
                alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
                if not alts:
                    return ""
                body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
                return f"(?:{body})?" if "" in node else body

            self._trie = re.compile("(?=(" + emit(trie) + "))")
        return self._trie

    def present(self, text: str) -> list[int]:
        """Special token ids that occur anywhere in `text`, in cache (priority) order."""
        if not self._by_text:
            return []
        if len(text) > _LONG_TEXT:
            longest = set(self._trie_pattern().findall(text))
            for tok in list(longest):
                longest.update(self._special_prefixes(tok))
            return self._ordered(longest)
        pattern, prefixes = self._built_index()
        by_text = self._by_text
        seen: set[str] = set()
        search = pattern.search
        n_text = len(text)
        m = search(text)
        while m is not None:
            pos = m.start()
            # the longest special token starting here (its special prefixes come along)
            tok = ""
            end = pos + 1
            while end <= n_text and text[pos:end] in prefixes:
                if text[pos:end] in by_text:
                    tok = text[pos:end]
                end += 1
            if tok and tok not in seen:
                seen.add(tok)
                seen.update(self._special_prefixes(tok))
            m = search(text, pos + 1)
        return self._ordered(seen)

    def _ordered(self, seen: set[str]) -> list[int]:
        ids = [tid for tok in seen for tid in self._by_text[tok]]
        ids.sort(key=self._rank.__getitem__)
        return ids

    def split(self, text: str, parse_special: bool) -> list[Fragment]:
        """Fragments of `text`: special token ids and (start, end) spans of ordinary text."""
        if not text:
            return []
        raw: list[tuple[int, int]] = [(0, len(text))]  # ordinary text still to be searched
        starts = [0]
        cut: list[tuple[int, int]] = []  # (position, token id) of every special token found
        attrs, texts = self._attrs, self._texts
        for tid in self.present(text):
            attr = attrs[tid]
            if not parse_special and attr & (ATTR_CONTROL | ATTR_UNKNOWN):
                continue
            tok = texts[tid]
            n = len(tok)
            # which raw fragments contain the token at all (bisect on every occurrence)
            touched: list[int] = []
            p = text.find(tok)
            while p >= 0:
                i = bisect_right(starts, p) - 1
                if i >= 0 and p + n <= raw[i][1]:
                    touched.append(i)
                # later starts inside fragment i need no look: the fragment is either
                # touched already or too short; continue at the next fragment
                if i + 1 >= len(raw):
                    break
                p = text.find(tok, max(p + 1, starts[i + 1]))
            if not touched:
                continue
            new: list[tuple[int, int]] = []
            last = 0
            for i in touched:
                new.extend(raw[last:i])
                last = i + 1
                pos, end = raw[i]
                while True:
                    m = text.find(tok, pos, end)
                    if m < 0:
                        break
                    left = m
                    if attr & ATTR_LSTRIP:
                        while left > pos and text[left - 1] in _ISSPACE:
                            left -= 1
                    if left > pos:
                        new.append((pos, left))
                    cut.append((m, tid))
                    pos = m + n
                    if attr & ATTR_RSTRIP:
                        while pos < end and text[pos] in _ISSPACE:
                            pos += 1
                if pos < end:
                    new.append((pos, end))
            new.extend(raw[last:])
            raw = new
            starts = [a for a, _ in raw]
        if not cut:
            plain: list[Fragment] = list(raw)
            return plain
        merged: list[tuple[int, Fragment]] = [(a, (a, b)) for a, b in raw]
        merged += [(m, tid) for m, tid in cut]
        merged.sort(key=lambda x: x[0])
        return [f for _, f in merged]
