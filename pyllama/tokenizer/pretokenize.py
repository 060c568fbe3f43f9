"""BPE pre-tokenization: llama.cpp's unicode_regex_split, translated to Python `re`.

llama.cpp applies a list of regexes in turn; each one splits every piece left by the
previous one. A regex whose text matches one of llama.cpp's hand-written splitters
(GPT-2, Llama 3, Qwen2, Qwen3.5, Kimi-K2, AFMoE digits, newline runs) gets that
splitter's behaviour, which we express as an equivalent Python regex over character
classes built from llama.cpp's code point table. Any other regex runs the way llama.cpp
runs it through std::regex: on a "collapsed" copy of the text where every non-ASCII code
point is replaced by one byte naming its category (\\p{L} -> \\xD2, ...), and unmatched
gaps between matches become pieces too.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from functools import cache
from itertools import accumulate, chain

from pyllama.errors import ModelLoadError
from pyllama.tokenizer import unicode as uni
from pyllama.tokenizer.pretokenizer_regexes import PRE_TYPE_REGEXES

_UCAT_ENUM = {
    "\\p{N}": uni.NUMBER,
    "\\p{L}": uni.LETTER,
    "\\p{P}": uni.PUNCTUATION,
    "\\p{M}": uni.ACCENT_MARK,
    "\\p{S}": uni.SYMBOL,
    "\\p{Lu}": uni.LETTER,
    "\\p{Ll}": uni.LETTER,
    "\\p{Lt}": uni.LETTER,
    "\\p{Lm}": uni.LETTER,
    "\\p{Lo}": uni.LETTER,
}

_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_LLAMA3 = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)
_QWEN2 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_QWEN35 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_KIMI = "\\p{Han}+"
_AFMOE = ("\\p{AFMoE_digits}", "\\d{1,3}(?=(?:\\d{3})*\\b)")
_NEWLINES = "[^\\n]+|[\\n]+"
# regex text -> the hand-written splitter llama.cpp runs instead (unicode_regex_split_custom)
_CUSTOM = {_GPT2: "gpt2", _QWEN2: "qwen2", _QWEN35: "qwen35", _KIMI: "kimi", _NEWLINES: "newlines"}
_CUSTOM.update(dict.fromkeys(_LLAMA3, "llama3"))


@cache
def _ci(letter: str) -> str:
    """Every code point whose llama.cpp lowercase is `letter` (what (?i:) means there)."""
    chars = {letter} | {chr(c) for c in uni.lowercase_sources(ord(letter))}
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


def _contractions() -> str:
    s, t, m, d, r, e, v, ll = (_ci(c) for c in "stmdrevl")
    return f"'(?:{s}|{t}|{m}|{d}|{r}{e}|{v}{e}|{ll}{ll})"


@cache
def _custom_pattern(kind: str) -> re.Pattern[str]:
    """A regex over the signature view equivalent to one of llama.cpp's hand-written splitters."""
    L, N, W, M, H, LH = (uni.SIG_CLASS[c] for c in ("L", "N", "W", "M", "H", "LnotH"))
    ws_tail = f"[{W}]*[\\r\\n]+|[{W}]+(?![^{W}])|[{W}]+|(?s:.)"
    if kind == "digits+gpt2":
        # "\\p{N}" then the GPT-2 splitter (starcoder, smollm, ...): digits stand alone and
        # end the pieces around them, so whitespace before a digit is "end of piece".
        src = f"[{N}]|'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[^{W}{L}{N}]+|[{W}]+(?![^{W}{N}])|[{W}]+|(?s:.)"
    elif kind == "gpt2":
        src = f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{W}{L}{N}]+|[{W}]+(?![^{W}])|[{W}]+|(?s:.)"
    elif kind in ("llama3", "qwen2"):
        digits = f"[{N}]{{1,3}}" if kind == "llama3" else f"[{N}]"
        src = f"{_contractions()}|[^\\r\\n{L}{N}]?[{L}]+|{digits}| ?[^{W}{L}{N}]+[\\r\\n]*|{ws_tail}"
    elif kind == "qwen35":
        src = f"{_contractions()}|[^\\r\\n{L}{N}]?[{L}{M}]+|[{N}]| ?[^{W}{L}{M}{N}]+[\\r\\n]*|{ws_tail}"
    elif kind == "kimi":
        src = f"[{H}]+|[^\\r\\n{L}{N}]?[{LH}]+(?:{_contractions()})?|[{N}]{{1,3}}| ?[^{W}{L}{N}]+[\\r\\n]*|{ws_tail}"
    elif kind == "newlines":
        src = "[^\\n]+|\\n+"
    elif kind == "digits":
        src = f"[{N}]+"
    else:
        raise KeyError(kind)
    return re.compile(src)


def _collapse_regex(expr: str) -> str:
    """unicode_regex_split's rewrite of \\p{X} into the collapsed byte + its ASCII members."""
    out: list[str] = []
    inside = False
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            out.append("[")
            inside = True
            i += 1
            continue
        if inside and c == "]" and expr[i - 1] != "\\":
            out.append("]")
            inside = False
            i += 1
            continue
        if c == "\\" and i + 3 < len(expr) and expr[i + 1] == "p" and expr[i + 2] == "{":
            close = expr.find("}", i + 3)
            if close != -1 and close <= i + 10 and expr[i : close + 1] in _UCAT_ENUM:
                flag = _UCAT_ENUM[expr[i : close + 1]]
                body = uni.COLLAPSE_CODE[flag] + uni.COLLAPSE_ASCII[flag]
                out.append(body if inside else f"[{body}]")
                i = close + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _ecmascript_to_python(expr: str) -> str:
    """ECMAScript `$` means end of input (Python's also matches before a final newline);
    groups become non-capturing (llama.cpp compiles with nosubs; we split on the match)."""
    out: list[str] = []
    inside = False
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == "\\":
            out.append(expr[i : i + 2])
            i += 2
            continue
        if c == "[":
            inside = True
        elif c == "]":
            inside = False
        elif c == "$" and not inside:
            c = "\\Z"
        elif c == "(" and not inside and expr[i + 1 : i + 2] != "?":
            c = "(?:"
        out.append(c)
        i += 1
    return "".join(out)


# A stage appends the end offsets of the pieces of view[start:end] to `out`.
Stage = Callable[[str, int, int, list[int]], None]


# A hand-written splitter's regex runs over at most WINDOW characters per call: one
# findall over megabytes is one C call that holds the GIL throughout (0.4 s for 4 MB), and
# a server's other threads (its event loop, its model thread) wait that long.
WINDOW = 1 << 18
# Pieces that end this far before a window's end are final: these regexes are runs of
# character classes with one-character lookaheads, so a piece depends on the text past its
# end only by one character, unless it runs up to the window's end (then it is cut there
# and redone in the next window).
MARGIN = 256
_SPACES = "\t\n\x0b\x0c\r \ue000"  # whitespace, and the signature view's other-whitespace class


def findall_windowed(findall: Callable[[str, int, int], list[str]], view: str, start: int, end: int) -> list[str]:
    """findall(view, start, end) for a regex whose matches tile the text, WINDOW characters
    at a time; the same pieces."""
    out: list[str] = []
    pos = start
    while end - pos > WINDOW:
        stop = pos + WINDOW
        pieces = findall(view, pos, stop)
        ends = list(accumulate(map(len, pieces), initial=pos))
        # whitespace before the margin may belong to a run that goes on past the window,
        # and the splitters' whitespace alternatives (`\s*[\r\n]+`, `\s+(?!\S)`) decide
        # where such a run's pieces end only at its end: keep what ends before that run
        limit = pos + len(view[pos:stop - MARGIN].rstrip(_SPACES))
        keep = bisect.bisect_right(ends, limit) - 1
        if keep <= 0:  # one piece spans (nearly) the whole window: read the rest in one call
            break
        out.extend(pieces[:keep])
        pos = ends[keep]
    out.extend(findall(view, pos, end))
    return out


def _cover_stage(pattern: re.Pattern[str]) -> Stage:
    """A hand-written splitter: its regex matches everything, piece after piece."""
    findall = pattern.findall

    def run(view: str, start: int, end: int, out: list[int]) -> None:
        ends = accumulate(map(len, findall_windowed(findall, view, start, end)), initial=start)
        next(ends)
        out.extend(ends)

    return run


def _gaps_stage(pattern: re.Pattern[str]) -> Stage:
    """std::regex_iterator splitting: matches and the non-empty gaps between them are pieces."""
    split = re.compile(f"({pattern.pattern})", pattern.flags).split

    def run(view: str, start: int, end: int, out: list[int]) -> None:
        parts = split(view[start:end]) if (start, end) != (0, len(view)) else split(view)
        pos = start
        for i, part in enumerate(parts):
            if part or i & 1:
                pos += len(part)
                out.append(pos)

    return run


def _afmoe_stage(view: str, start: int, end: int, out: list[int]) -> None:
    """unicode_regex_split_custom_afmoe, including its habit of gluing the text before a
    number to the number's first digit group."""
    prev = start
    for m in _custom_pattern("digits").finditer(view, start, end):
        ds, de = m.span()
        cur = ds
        rem = (de - ds) % 3
        if rem:
            cur += rem
            if cur > prev:
                out.append(cur)
                prev = cur
        while cur < de:
            cur += 3
            if cur > prev:
                out.append(cur)
                prev = cur
    if prev < end:
        out.append(end)


def compile_stage(expr: str) -> tuple[Stage, str]:
    """A stage for one llama.cpp regex, and which view of the text it reads."""
    if expr in _CUSTOM:
        return _cover_stage(_custom_pattern(_CUSTOM[expr])), "sig"
    if expr in _AFMOE:
        return _afmoe_stage, "sig"
    if any(u in expr for u in _UCAT_ENUM):
        if not expr.isascii():
            raise ModelLoadError(f"pre-tokenizer regex mixes unicode categories and non-ASCII: {expr!r}")
        src, view = _collapse_regex(expr), "collapsed"
    else:
        src, view = expr, "wide"
    try:
        pattern = re.compile(_ecmascript_to_python(src), re.ASCII)
    except re.error as e:
        raise ModelLoadError(f"cannot compile pre-tokenizer regex {expr!r}: {e}") from e
    return _gaps_stage(pattern), view


class PreTokenizer:
    """Splits text into words for BPE, like unicode_regex_split(text, regexes)."""

    def __init__(self, regexes: tuple[str, ...]) -> None:
        self.regexes = regexes
        # one hand-written splitter alone: on ASCII text its regex can run on the text itself
        single = "digits+gpt2" if regexes == ("\\p{N}", _GPT2) else None
        if single is None and len(regexes) == 1 and regexes[0] in _CUSTOM:
            single = _CUSTOM[regexes[0]]
        self._single = _custom_pattern(single).findall if single else None
        if single == "digits+gpt2":
            self._stages = [(_cover_stage(_custom_pattern(single)), "sig")]
        else:
            self._stages = [compile_stage(r) for r in regexes]
        self._views = {v for _, v in self._stages}

    def split(self, text: str) -> list[str]:
        if self._single is not None and text.isascii():
            return findall_windowed(self._single, text, 0, len(text))  # the signature view of ASCII text is the text
        views: dict[str, str] = {}
        if "sig" in self._views:
            views["sig"] = uni.signature(text)
        if "collapsed" in self._views:
            views["collapsed"] = uni.collapse(text)
        if "wide" in self._views:
            views["wide"] = uni.wide_text(text)
        bounds = [len(text)]
        for stage, view_name in self._stages:
            view = views[view_name]
            new: list[int] = []
            start = 0
            for end in bounds:
                stage(view, start, end, new)
                start = end
            bounds = new
        return [text[a:b] for a, b in zip(chain((0,), bounds), bounds, strict=False)]


def pre_tokenizer_for(pre_type: str) -> tuple[PreTokenizer, bool]:
    """The pre-tokenizer and byte_encode flag llama.cpp uses for a pre type."""
    regexes, byte_encode = PRE_TYPE_REGEXES.get(pre_type, PRE_TYPE_REGEXES["default"])
    return PreTokenizer(regexes), byte_encode
