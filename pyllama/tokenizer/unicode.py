"""Code point categories exactly as llama.cpp sees them (src/unicode.cpp).

Python's `re` has no `\\p{L}`; we build explicit character classes from llama.cpp's own
table (unicode_tables.py, Unicode 15.1) so that every pre-tokenizer puts word boundaries
where llama.cpp does, under CPython 3.11 and Pyodide alike. The GPT-2 byte<->unicode
map and the collapsed-text trick llama.cpp uses for its std::regex fallback live here too.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from pyllama.tokenizer import unicode_tables as _t

UNDEFINED = 0x0001
NUMBER = 0x0002
LETTER = 0x0004
SEPARATOR = 0x0008
ACCENT_MARK = 0x0010
PUNCTUATION = 0x0020
SYMBOL = 0x0040
CONTROL = 0x0080

_STARTS: tuple[int, ...] = _t.FLAG_RANGES[0::2]
_FLAGS: tuple[int, ...] = _t.FLAG_RANGES[1::2]
WHITESPACE: frozenset[int] = frozenset(_t.WHITESPACE)
_LOWER: dict[int, int] = dict(zip(_t.LOWERCASE[0::2], _t.LOWERCASE[1::2], strict=True))
_NFD_FIRST: tuple[int, ...] = _t.NFD_RANGES[0::3]
_NFD_LAST: tuple[int, ...] = _t.NFD_RANGES[1::3]
_NFD_TO: tuple[int, ...] = _t.NFD_RANGES[2::3]
MAX_CODEPOINTS = 0x110000


def category(cpt: int) -> int:
    """The category flag (one of NUMBER, LETTER, ...) of a code point."""
    if cpt >= MAX_CODEPOINTS:
        return UNDEFINED
    return _FLAGS[bisect.bisect_right(_STARTS, cpt) - 1]


def is_whitespace(cpt: int) -> bool:
    return cpt in WHITESPACE


def tolower(cpt: int) -> int:
    """llama.cpp's unicode_tolower: simple lowercase mapping from UnicodeData.txt."""
    return _LOWER.get(cpt, cpt)


def lowercase_sources(cpt: int) -> list[int]:
    """Code points whose lowercase mapping is `cpt`."""
    return [src for src, dst in _LOWER.items() if dst == cpt]


def nfd_first(cpt: int) -> int:
    """llama.cpp's (partial) NFD: a code point maps to the first code point of its NFD."""
    i = bisect.bisect_right(_NFD_FIRST, cpt) - 1
    if i >= 0 and _NFD_FIRST[i] <= cpt <= _NFD_LAST[i]:
        return _NFD_TO[i]
    return cpt


def is_han(cpt: int) -> bool:
    """unicode_cpt_is_han: the CJK ideograph blocks (used by the Kimi-K2 splitter)."""
    return (
        0x4E00 <= cpt <= 0x9FFF
        or 0x3400 <= cpt <= 0x4DBF
        or 0x20000 <= cpt <= 0x2A6DF
        or 0x2A700 <= cpt <= 0x2B73F
        or 0x2B740 <= cpt <= 0x2B81F
        or 0x2B820 <= cpt <= 0x2CEAF
        or 0x2CEB0 <= cpt <= 0x2EBEF
        or 0xF900 <= cpt <= 0xFAFF
        or 0x2F800 <= cpt <= 0x2FA1F
    )


# GPT-2's byte <-> printable unicode map (unicode_byte_to_utf8_map).
def _byte_to_unicode() -> list[str]:
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = [""] * 256
    for b in keep:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE: list[str] = _byte_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_UNICODE)}
# str.translate table applied to a latin-1 view of UTF-8 bytes: byte-encodes a word.
BYTE_ENCODE_TABLE: dict[int, str] = {b: c for b, c in enumerate(BYTE_TO_UNICODE) if chr(b) != c}


def byte_encode(word: str) -> str:
    """unicode_byte_encoding_process for one word: UTF-8 bytes -> GPT-2 printable chars."""
    return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(BYTE_ENCODE_TABLE)


# The collapsed representation (unicode_regex_split): ASCII stays, every other code point
# becomes one byte naming its category, so std::regex (and here `re`) can match \p{..}.
COLLAPSE_CODE = {NUMBER: "\xd1", LETTER: "\xd2", PUNCTUATION: "\xd3", ACCENT_MARK: "\xd4", SYMBOL: "\xd5"}
COLLAPSE_ASCII = {
    NUMBER: "\\x30-\\x39",
    LETTER: "\\x41-\\x5A\\x61-\\x7A",
    PUNCTUATION: "\\x21-\\x23\\x25-\\x2A\\x2C-\\x2F\\x3A-\\x3B\\x3F-\\x40\\x5B-\\x5D\\x5F\\x7B\\x7D",
    ACCENT_MARK: "",
    SYMBOL: "\\x24\\x2B\\x3C-\\x3E\\x5E\\x60\\x7C\\x7E",
}

# The "signature" view for the hand-written splitters: ASCII stays (their rules name
# ASCII characters), every other code point becomes a private-use stand-in for the
# properties those splitters test. Regexes over it need only tiny character classes.
SIG_WS, SIG_LETTER, SIG_HAN_LETTER, SIG_NUMBER, SIG_MARK, SIG_OTHER, SIG_HAN_OTHER = (
    chr(c) for c in range(0xE000, 0xE007)
)
SIG_CLASS = {
    "L": "A-Za-z" + SIG_LETTER + SIG_HAN_LETTER,
    "N": "0-9" + SIG_NUMBER,
    "W": "\\t\\n\\x0b\\x0c\\r " + SIG_WS,
    "M": SIG_MARK,
    "H": SIG_HAN_LETTER + SIG_HAN_OTHER,
    "LnotH": "A-Za-z" + SIG_LETTER,
}


def _sig(cpt: int) -> str:
    if cpt in WHITESPACE:
        return SIG_WS
    cat = category(cpt)
    han = is_han(cpt)
    if cat == LETTER:
        return SIG_HAN_LETTER if han else SIG_LETTER
    if han:
        return SIG_HAN_OTHER
    return {NUMBER: SIG_NUMBER, ACCENT_MARK: SIG_MARK}.get(cat, SIG_OTHER)


def _collapsed(cpt: int) -> str:
    if cpt in WHITESPACE:
        return "\x0b"
    return COLLAPSE_CODE.get(category(cpt), "\xd0")


def _wide(cpt: int) -> str:
    return "\x0b" if cpt in WHITESPACE else chr(cpt)


class _LazyTable(dict[int, str]):
    """A str.translate table filled on first sight of each code point (ASCII is identity)."""

    def __init__(self, fn: Callable[[int], str]) -> None:
        super().__init__((c, chr(c)) for c in range(128))
        self._fn = fn

    def __missing__(self, cpt: int) -> str:
        v = self[cpt] = self._fn(cpt)
        return v


_SIG_TABLE = _LazyTable(_sig)
_COLLAPSE_TABLE = _LazyTable(_collapsed)
_WIDE_TABLE = _LazyTable(_wide)


def signature(text: str) -> str:
    """The text with each non-ASCII code point replaced by its SIG_* stand-in."""
    return text if text.isascii() else text.translate(_SIG_TABLE)


def collapse(text: str) -> str:
    """llama.cpp's text_collapsed: same length as `text`, one char per code point."""
    return text if text.isascii() else text.translate(_COLLAPSE_TABLE)


def wide_text(text: str) -> str:
    """The wregex fallback's view: non-ASCII whitespace becomes \\x0b (C++ \\s misses it)."""
    return text if text.isascii() else text.translate(_WIDE_TABLE)
