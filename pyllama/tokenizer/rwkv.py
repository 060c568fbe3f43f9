"""RWKV "world" tokenizer (llm_tokenizer_rwkv_session): greedy longest byte match."""

from __future__ import annotations

from pyllama.errors import InvalidRequestError
from pyllama.tokenizer.detokenize import unescape_rwkv
from pyllama.tokenizer.vocab import Vocab


class RWKVTokenizer:
    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._tokens: dict[bytes, int] = {}
        self._prefixes: set[bytes] = set()
        for tid, text in enumerate(vocab.texts):
            raw = unescape_rwkv(text)
            self._tokens[raw] = tid
            for i in range(1, len(raw) + 1):
                self._prefixes.add(raw[:i])

    def encode(self, text: str, out: list[int]) -> None:
        data = text.encode("utf-8")
        n = len(data)
        pos = 0
        while pos < n:
            best_len = 0
            best_id = 0
            ln = 1
            while pos + ln <= n and data[pos : pos + ln] in self._prefixes:
                tid = self._tokens.get(data[pos : pos + ln])
                if tid is not None:
                    best_len, best_id = ln, tid
                ln += 1
            if best_len == 0:
                # llama.cpp emits unk (or loops forever when a prefix has no token); we emit unk
                unk = self.vocab.ids["unk"]
                if unk is None:
                    raise InvalidRequestError(f"RWKV vocabulary cannot encode byte 0x{data[pos]:02X}")
                out.append(unk)
                pos += 1
                continue
            out.append(best_id)
            pos += best_len
