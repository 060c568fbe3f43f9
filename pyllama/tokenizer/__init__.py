"""Text <-> token ids, bit-for-bit with llama.cpp (src/llama-vocab.cpp is the spec).

`Tokenizer.from_gguf(gguf)` reads the vocabulary from GGUF metadata and picks the
tokenizer family: SPM (llama 2, Gemma), BPE with any of llama.cpp's pre-tokenizers
(GPT-2, Llama 3, Qwen, SmolLM, ...), WPM (BERT), UGM (T5) or RWKV. `tokenize` is
llama_tokenize, `token_to_piece` is llama_token_to_piece (lstrip=0), `detokenize` is
llama_detokenize. `IncrementalDecoder` turns a stream of ids into text without ever
emitting half a UTF-8 character.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from typing import Protocol

from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.gguf_file import GGUFFile
from pyllama.tokenizer.bench import bench_tokenizer, sample_text, tokenize_throughput
from pyllama.tokenizer.detokenize import Detokenizer
from pyllama.tokenizer.special import SpecialSplitter
from pyllama.tokenizer.vocab import ATTR_CONTROL, Vocab, load_vocab

__all__ = [
    "IncrementalDecoder",
    "Tokenizer",
    "Vocab",
    "bench_tokenizer",
    "sample_text",
    "tokenize_throughput",
]

log = logging.getLogger(__name__)


class _Encoder(Protocol):
    def encode(self, text: str, out: list[int]) -> None: ...


def _encoder_for(vocab: Vocab) -> _Encoder:
    if vocab.kind == "SPM":
        from pyllama.tokenizer.spm import SPMTokenizer

        return SPMTokenizer(vocab)
    if vocab.kind == "BPE":
        from pyllama.tokenizer.bpe import BPETokenizer, HybridDNATokenizer, WhitespaceBPETokenizer

        if vocab.model == "whitespace":
            return WhitespaceBPETokenizer(vocab)
        if vocab.model == "hybriddna":
            return HybridDNATokenizer(vocab)
        return BPETokenizer(vocab)
    if vocab.kind == "WPM":
        from pyllama.tokenizer.wpm import WPMTokenizer

        return WPMTokenizer(vocab)
    if vocab.kind == "UGM":
        from pyllama.tokenizer.ugm import UGMTokenizer

        return UGMTokenizer(vocab)
    if vocab.kind == "RWKV":
        from pyllama.tokenizer.rwkv import RWKVTokenizer

        return RWKVTokenizer(vocab)
    raise ModelLoadError(f"tokenizer kind {vocab.kind} is not supported")


class Tokenizer:
    """One model's tokenizer. Build it with `Tokenizer.from_gguf`."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._encoder = _encoder_for(vocab)
        self._special = SpecialSplitter(vocab)
        self._detok = Detokenizer(vocab)
        ids = vocab.ids
        self.n_vocab: int = vocab.n_tokens
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int | None = ids["eos"]
        self.eot_id: int | None = ids["eot"]
        self.eom_id: int | None = ids["eom"]
        self.unk_id: int | None = ids["unk"]
        self.sep_id: int | None = ids["sep"]
        self.pad_id: int | None = ids["pad"]
        self.mask_id: int | None = ids["mask"]
        self.fim_pre_id: int | None = ids["fim_pre"]
        self.fim_suf_id: int | None = ids["fim_suf"]
        self.fim_mid_id: int | None = ids["fim_mid"]
        self.fim_pad_id: int | None = ids["fim_pad"]
        self.fim_rep_id: int | None = ids["fim_rep"]
        self.fim_sep_id: int | None = ids["fim_sep"]
        self.eog_ids: frozenset[int] = vocab.eog_ids
        self.add_bos: bool = vocab.add_bos
        self.add_eos: bool = vocab.add_eos
        self.add_sep: bool = vocab.add_sep
        self.kind: str = vocab.kind
        self.pre: str = vocab.pre
        self._nl_id: int | None = None

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        return cls(load_vocab(gguf))

    # ---- text -> ids -------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """llama_tokenize(text, add_special, parse_special)."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"tokenize needs a str, got {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidRequestError(
                    f"text is not valid Unicode (lone surrogate at {e.start})"
                ) from None
        v = self.vocab
        frags = self._special.split(text, parse_special)
        out: list[int] = []
        enc = self._encoder.encode
        if v.kind == "SPM":
            if add_special and v.add_bos:
                out.append(self._need(self.bos_id, "BOS"))
            prev_special = True
            for frag in frags:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                raw = text[frag[0] : frag[1]]
                if v.add_space_prefix and prev_special:
                    raw = " " + raw
                enc(raw.replace(" ", "\u2581"), out)
                prev_special = False
            if add_special and v.add_bos and len(out) >= 2 and out[1] == self.bos_id:
                self._warn_double("BOS", "starts")
            if add_special and v.add_eos:
                out.append(self._need(self.eos_id, "EOS"))
            return out
        if add_special and (v.kind == "WPM" or (v.kind in ("BPE", "UGM") and v.add_bos)):
            out.append(self._need(self.bos_id, "BOS"))
        escape = v.kind == "BPE" and v.escape_whitespaces
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
                continue
            raw = text[frag[0] : frag[1]]
            enc(raw.replace(" ", "\u2581") if escape else raw, out)
        if add_special:
            if v.kind == "WPM":
                out.append(self._need(self.sep_id, "SEP"))
            elif v.kind in ("BPE", "UGM") and v.add_eos:
                out.append(self._need(self.eos_id, "EOS"))
            if v.kind in ("BPE", "UGM") and v.add_bos and len(out) >= 2 and out[1] == self.bos_id:
                self._warn_double("BOS", "starts")
            if v.kind == "BPE" and v.add_eos and len(out) >= 2 and out[-2] == self.eos_id:
                self._warn_double("EOS", "ends")
        return out

    def pieces_bytes(self) -> list[bytes]:
        """Every token's text with special tokens rendered (the grammar matches these).

        Built once and returned as the same list each time: grammar and DRY caches key on it.
        """
        pieces: list[bytes] | None = getattr(self, "_pieces_bytes", None)
        if pieces is None:
            pieces = [self.token_to_piece(i, special=True) for i in range(self.n_vocab)]
            self._pieces_bytes = pieces
        return pieces

    def _need(self, tid: int | None, what: str) -> int:
        if tid is None:
            raise InvalidRequestError(f"the model asks for a {what} token but its vocabulary defines none")
        return tid

    def _warn_double(self, what: str, where: str) -> None:
        log.warning(
            "Added a %s token to the prompt as specified by the model but the prompt also %s with a %s "
            "token. So now the final prompt %s with 2 %s tokens. Are you sure this is what you want?",
            what, where, what, where, what,
        )  # fmt: skip

    # ---- ids -> text -------------------------------------------------------------------

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """llama_token_to_piece(token, lstrip=0, special): the token's bytes."""
        return self._detok.piece(token, special)

    def detokenize(
        self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False
    ) -> str:
        """llama_detokenize, decoded as UTF-8 (invalid bytes become U+FFFD)."""
        return self.detokenize_bytes(tokens, remove_special, unparse_special).decode("utf-8", "replace")

    def detokenize_bytes(
        self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False
    ) -> bytes:
        return self._detok.detokenize(tokens, remove_special, unparse_special)

    def tokens_to_str(self, tokens: Sequence[int]) -> str:
        """llama-server's tokens_to_str (POST /detokenize): pieces with special=true, joined."""
        return b"".join(self._detok.piece(t, True) for t in tokens).decode("utf-8", "replace")

    def all_pieces(self, special: bool = True) -> list[bytes]:
        """token_to_piece of every id, in id order (for samplers and grammar indexes)."""
        piece = self._detok.piece
        return [piece(i, special) for i in range(self.n_vocab)]

    def piece_text(self, token: int) -> str:
        """The token's vocabulary string (llama_vocab_get_text)."""
        if not 0 <= token < self.n_vocab:
            raise InvalidRequestError(f"token id {token} is out of range (vocabulary has {self.n_vocab})")
        return self.vocab.texts[token]

    # ---- attributes --------------------------------------------------------------------

    def is_eog(self, token: int) -> bool:
        return token in self.eog_ids

    def is_control(self, token: int) -> bool:
        return 0 <= token < self.n_vocab and bool(self.vocab.attrs[token] & ATTR_CONTROL)

    def token_attr(self, token: int) -> int:
        """llama_token_attr bits of a token (see pyllama.tokenizer.vocab.ATTR_*)."""
        return self.vocab.attrs[token]

    def token_score(self, token: int) -> float:
        return self.vocab.scores[token]

    @property
    def nl_id(self) -> int | None:
        """llama_vocab_nl: the newline token."""
        if self._nl_id is None:
            v = self.vocab
            if v.kind == "SPM":
                self._nl_id = v.token_to_id.get("<0x0A>", v.token_to_id.get("\n", self.pad_id))
            elif v.kind == "WPM":
                self._nl_id = self.pad_id
            else:
                ids = self.tokenize("\n", add_special=False)
                self._nl_id = ids[0] if ids else self.pad_id
        return self._nl_id


class IncrementalDecoder:
    """Streaming detokenizer: feed ids one by one, get text that never splits a character.

    Pieces are token_to_piece(special) bytes joined as llama-server streams them; bytes of
    an unfinished UTF-8 sequence are held back until the sequence completes. Bytes that
    can never form a character come out as U+FFFD.
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._special = special
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token: int) -> str:
        return str(self._decoder.decode(self._tokenizer.token_to_piece(token, self._special)))

    def flush(self) -> str:
        """Whatever is still held back (an unfinished character becomes U+FFFD); resets."""
        text = str(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        return text
