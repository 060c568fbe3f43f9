"""Pre-tokenization in windows (pyllama/tokenizer/pretokenize.py, findall_windowed) gives
the same pieces as one call over the whole text, for every hand-written splitter, on text
built to put long runs (letters, digits, spaces, newlines, punctuation, contractions)
across the window edges. Windows of 64 characters here instead of 256 K."""

from __future__ import annotations

import random

import pytest

from pyllama.tokenizer import pretokenize
from pyllama.tokenizer.pretokenize import _CUSTOM, PreTokenizer

ATOMS = ["word", " word", "  ", "\n", "\n\n", " \n ", "'s", "'ll", "12345", " 7", "!!", "?!\n", "\t", "é", "日本",
         "Ωmega", "   x", "a" * 90, " " * 90, "9" * 50, "\r\n", "..." * 20, "don't", "🦙"]


def texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ATOMS) for _ in range(rng.randint(20, 400))) for _ in range(n)]


@pytest.mark.parametrize("regexes", sorted({(r,) for r in _CUSTOM} | {("\\p{N}", pretokenize._GPT2)}))
def test_windowed_pre_tokenization_matches_one_pass(regexes: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    pre = PreTokenizer(regexes)
    samples = [*texts(len(regexes[0]), 60), "".join(texts(1, 3)).encode("ascii", "ignore").decode()]
    whole = [pre.split(t) for t in samples]
    monkeypatch.setattr(pretokenize, "WINDOW", 64)
    monkeypatch.setattr(pretokenize, "MARGIN", 16)
    windowed = [pre.split(t) for t in samples]
    assert windowed == whole
    assert all("".join(w) == t for w, t in zip(windowed, samples, strict=True))
