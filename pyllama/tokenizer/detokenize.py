"""Ids back to bytes: llama_token_to_piece and llama_detokenize.

A piece is the token's text with the tokenizer's escaping undone: U+2581 back to a
space (SPM, UGM, Gemma-4 style BPE), GPT-2's printable characters back to raw bytes
(byte-level BPE), <0xXX> byte tokens to their byte. Control and unknown tokens render
as nothing unless `special` is set. `detokenize` adds llama.cpp's post-processing:
dropping the BOS/EOS the model adds, the SPM leading space, and the
clean_up_tokenization_spaces passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyllama.errors import InvalidRequestError
from pyllama.tokenizer.unicode import UNICODE_TO_BYTE
from pyllama.tokenizer.vocab import (
    ATTR_BYTE,
    ATTR_CONTROL,
    ATTR_NORMAL,
    ATTR_UNKNOWN,
    ATTR_USER_DEFINED,
    Vocab,
)

_ATTR_SPECIAL = ATTR_UNKNOWN | ATTR_CONTROL


class _DecodeTable(dict[int, str]):
    """GPT-2 printable character -> the latin-1 character of its byte; others -> U+FFFF."""

    def __missing__(self, cpt: int) -> str:
        return "\uffff"


_DECODE_TABLE = _DecodeTable({ord(c): chr(b) for c, b in UNICODE_TO_BYTE.items()})


def decode_gpt2_text(text: str) -> bytes:
    """llama_decode_text: printable GPT-2 characters -> bytes, with its [UNK_BYTE_..] marker."""
    mapped = text.translate(_DECODE_TABLE)
    if "\uffff" not in mapped:
        return mapped.encode("latin-1")
    out = bytearray()
    for c in text:
        b = UNICODE_TO_BYTE.get(c)
        if b is not None:
            out.append(b)
        else:
            out += b"[UNK_BYTE_0x" + c.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
    return bytes(out)


def unescape_rwkv(text: str) -> bytes:
    """llama_unescape_rwkv_token: the RWKV vocabulary writes bytes as \\xNN, \\t, \\n, ..."""
    out = bytearray()
    escaping = False
    hex_left = 0
    acc = 0
    for b in text.encode("utf-8"):
        if hex_left:
            acc = (acc << 4) + (b - 87 if b >= ord("a") else b - 48)
            hex_left -= 1
            if hex_left == 0:
                out.append(acc & 0xFF)
                acc = 0
            continue
        if escaping:
            escaping = False
            if b == ord("t"):
                out.append(9)
            elif b == ord("n"):
                out.append(10)
            elif b == ord("r"):
                out.append(13)
            elif b == ord("x"):
                hex_left = 2
            else:
                out.append(b)
            continue
        if b == ord("\\"):
            escaping = True
            continue
        out.append(b)
    return bytes(out)


class Detokenizer:
    """token_to_piece with llama.cpp's piece cache (filled lazily: Gemma has 262k tokens)."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._pieces: list[bytes | None] = [None] * vocab.n_tokens

    def _piece_special(self, token: int) -> bytes:
        """The cached piece: token_to_piece(token, special=True)."""
        v = self.vocab
        text = v.texts[token]
        attr = v.attrs[token]
        if v.kind == "RWKV":
            return unescape_rwkv(text)
        if attr & (_ATTR_SPECIAL | ATTR_USER_DEFINED):
            return text.encode("utf-8")
        if attr & ATTR_NORMAL:
            if v.kind == "BPE" and not v.escape_whitespaces:
                return decode_gpt2_text(text)
            return text.replace("\u2581", " ").encode("utf-8")
        if attr & ATTR_BYTE and v.kind in ("SPM", "UGM", "BPE"):
            try:
                return bytes([int(text[3:5], 16)])
            except ValueError:
                return b"\x00"
        return b""

    def piece(self, token: int, special: bool) -> bytes:
        if not 0 <= token < len(self._pieces):
            raise InvalidRequestError(
                f"token id {token} is out of range (vocabulary has {len(self._pieces)})"
            )
        if not special and self.vocab.attrs[token] & _ATTR_SPECIAL:
            return b""
        p = self._pieces[token]
        if p is None:
            p = self._pieces[token] = self._piece_special(token)
        return p

    def detokenize(self, tokens: Sequence[int], remove_special: bool, unparse_special: bool) -> bytes:
        """llama_detokenize."""
        v = self.vocab
        toks = list(tokens)
        remove_space = v.add_space_prefix
        if remove_special and v.add_bos and toks and toks[0] == v.ids["bos"]:
            remove_space = False
            toks = toks[1:]
        if remove_special and v.add_eos and toks and toks[-1] == v.ids["eos"]:
            toks = toks[:-1]
        parts: list[bytes] = []
        for tok in toks:
            p = self.piece(tok, unparse_special)
            if remove_space and p[:1] == b" ":
                p = p[1:]
            remove_space = False
            parts.append(p)
        text = b"".join(parts)
        return clean_spaces(text) if v.clean_spaces else text


def clean_spaces(data: bytes) -> bytes:
    """The three clean_up_tokenization_spaces passes of llama_detokenize, ported literally."""
    t = bytearray(data)
    sp, ap = ord(" "), ord("'")
    # pass 1: " ?", " !", " .", " ," lose their space
    total1 = len(t)
    total = 1 if total1 else 0
    for i in range(1, total1):
        x = t[i]
        if t[i - 1] == sp and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # pass 2: a lone apostrophe between spaces loses both spaces
    total2 = total
    total = 1 if total2 else 0
    i = 1
    while i < total2:
        x = t[i]
        if x == ap and i + 1 < total2 and t[i - 1] == sp and t[i + 1] == sp:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # pass 3: " 's", " 'm", " 're", " 've" lose their space
    total3 = total
    total = 1 if total3 else 0
    for i in range(1, total3):
        x = t[i]
        if t[i - 1] == sp and x == ap and i + 1 < total3:
            x1 = t[i + 1]
            if x1 in b"sm":
                total -= 1
            elif x1 not in b"td" and i + 2 < total3:
                x2 = t[i + 2]
                if (x1, x2) in ((ord("r"), ord("e")), (ord("v"), ord("e"))):
                    total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])
