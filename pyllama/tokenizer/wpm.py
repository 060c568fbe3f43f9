"""WordPiece (BERT): llm_tokenizer_wpm_session.

Text is normalized (optional NFD accent stripping and lowercasing, control characters
dropped), split on whitespace and around punctuation and CJK ideographs; each word gets
a leading U+2581 and is covered greedily by the longest vocabulary entries (byte-wise,
like llama.cpp). A word that cannot be covered becomes one [UNK].
"""

from __future__ import annotations

from pyllama.errors import InvalidRequestError
from pyllama.tokenizer import unicode as uni
from pyllama.tokenizer.vocab import Vocab


def is_chinese_char(cpt: int) -> bool:
    return (
        0x04E00 <= cpt <= 0x09FFF
        or 0x03400 <= cpt <= 0x04DBF
        or 0x20000 <= cpt <= 0x2A6DF
        or 0x2A700 <= cpt <= 0x2B73F
        or 0x2B740 <= cpt <= 0x2B81F
        or 0x2B920 <= cpt <= 0x2CEAF  # sic: llama.cpp follows HF's 0x2B920
        or 0x0F900 <= cpt <= 0x0FAFF
        or 0x2F800 <= cpt <= 0x2FA1F
    )


def preprocess(text: str, lowercase: bool, strip_accents: bool) -> list[str]:
    """Normalize and split into words (llm_tokenizer_wpm_session::preprocess)."""
    words = [""]
    for ch in text:
        cpt = ord(ch)
        if strip_accents:
            cpt = uni.nfd_first(cpt)
        if cpt in uni.WHITESPACE:
            if words[-1]:
                words.append("")
            continue
        cat = uni.category(cpt)
        if cpt == 0 or cpt == 0xFFFD or cat == uni.CONTROL:
            continue
        if strip_accents and cat == uni.ACCENT_MARK:
            continue
        s = chr(uni.tolower(cpt) if lowercase else cpt)
        if cat == uni.PUNCTUATION or (cpt < 0x7F and cat == uni.SYMBOL) or is_chinese_char(cpt):
            if words[-1]:
                words.append("")
            words[-1] = s
            words.append("")
        else:
            words[-1] += s
    if not words[-1]:
        words.pop()
    return words


class WPMTokenizer:
    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.max_len = vocab.max_token_len
        self._by_bytes = {t.encode("utf-8"): i for t, i in vocab.token_to_id.items()}

    def encode(self, text: str, out: list[int]) -> None:
        v = self.vocab
        for word in preprocess(text, v.lowercase, v.strip_accents):
            if not word:
                continue
            w = ("\u2581" + word).encode("utf-8")
            n = len(w)
            start = len(out)
            i = 0
            while i < n:
                for j in range(min(n, i + self.max_len + 1), i, -1):
                    tid = self._by_bytes.get(w[i:j])
                    if tid is not None:
                        out.append(tid)
                        i = j
                        break
                else:
                    del out[start:]
                    break
            if len(out) == start:
                unk = v.ids["unk"]
                if unk is None:
                    raise InvalidRequestError("WPM vocabulary has no [UNK] token for an unknown word")
                out.append(unk)
