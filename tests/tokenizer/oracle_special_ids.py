"""Runs under the oracle interpreter: llama.cpp's special ids and attributes of vocabularies.

stdin: JSON list of [name, path]; stdout: {name: {...}} with attrs reduced to the
non-normal ones. Not a pytest module.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    import llama_cpp  # type: ignore[import-not-found]
    from llama_cpp import llama_cpp as C

    out: dict[str, Any] = {}
    for name, path in json.load(sys.stdin):
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        v = C.llama_model_get_vocab(llm.model)
        n = C.llama_vocab_n_tokens(v)

        def f(x: int) -> int | None:
            return None if x < 0 else x

        fims = (C.llama_vocab_fim_pre, C.llama_vocab_fim_suf, C.llama_vocab_fim_mid,
                C.llama_vocab_fim_pad, C.llama_vocab_fim_rep, C.llama_vocab_fim_sep)  # fmt: skip
        attrs = [int(C.llama_vocab_get_attr(v, i)) for i in range(n)]
        out[name] = {
            "bos": f(C.llama_vocab_bos(v)), "eos": f(C.llama_vocab_eos(v)), "eot": f(C.llama_vocab_eot(v)),
            "sep": f(C.llama_vocab_sep(v)), "nl": f(C.llama_vocab_nl(v)), "pad": f(C.llama_vocab_pad(v)),
            "fim": [f(g(v)) for g in fims],
            "eog": [i for i in range(n) if C.llama_vocab_is_eog(v, i)],
            "add_bos": bool(C.llama_vocab_get_add_bos(v)), "add_eos": bool(C.llama_vocab_get_add_eos(v)),
            "attrs_not_normal": {str(i): a for i, a in enumerate(attrs) if a != 4},
        }  # fmt: skip
        llm.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
