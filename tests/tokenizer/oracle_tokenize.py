"""Runs under the oracle interpreter (llama-cpp-python): tokenize/detokenize with llama.cpp.

stdin: JSON list of {"path", "texts"}; stdout: JSON list (same order) of
{"tokenize": {"TT"|"FF": [[ids]...]}, "detok": {"FF"|"TT": [str...]}} where TT/FF are
(add_special, parse_special) for tokenize and (remove_special, unparse_special) for
detokenize (applied to the TT ids). Not a pytest module; imported by nothing.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any


def main() -> None:
    import llama_cpp  # type: ignore[import-not-found]
    from llama_cpp import llama_cpp as C

    out: list[dict[str, Any]] = []
    for req in json.load(sys.stdin):
        try:
            llm = llama_cpp.Llama(model_path=req["path"], vocab_only=True, verbose=False)
        except Exception as e:
            out.append({"error": f"load failed: {e}"})
            continue
        vocab = C.llama_model_get_vocab(llm.model)
        res: dict[str, dict[str, list[Any]]] = {"tokenize": {}, "detok": {}}
        for key, add, parse in (("TT", True, True), ("FF", False, False)):
            res["tokenize"][key] = [_tok(C, vocab, t, add, parse) for t in req["texts"]]
        for key, rm, unparse in (("FF", False, False), ("TT", True, True)):
            res["detok"][key] = [_detok(C, vocab, ids, rm, unparse) for ids in res["tokenize"]["TT"]]
        out.append(res)
        llm.close()
    json.dump(out, sys.stdout)


def _tok(C, vocab, text: str, add: bool, parse: bool) -> list[int]:  # type: ignore[no-untyped-def]
    data = text.encode("utf-8")
    n = len(data) + 16
    buf = (C.llama_token * n)()
    k = C.llama_tokenize(vocab, data, len(data), buf, n, add, parse)
    return list(buf[:k])


def _detok(C, vocab, ids: list[int], rm: bool, unparse: bool) -> str:  # type: ignore[no-untyped-def]
    arr = (C.llama_token * max(1, len(ids)))(*ids)
    cap = 64 + 16 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    k = C.llama_detokenize(vocab, arr, len(ids), buf, cap, rm, unparse)
    if k < 0:
        cap = -k
        buf = ctypes.create_string_buffer(cap)
        k = C.llama_detokenize(vocab, arr, len(ids), buf, cap, rm, unparse)
    return buf.raw[:k].decode("utf-8", "surrogateescape")


if __name__ == "__main__":
    main()
