"""Allowed-token sets on SmolLM2's vocabulary, compared with llama.cpp's grammar sampler.

EXPECTED holds llama.cpp's result for each (grammar, accepted token prefix): the number of
allowed tokens and the SHA-1 of their sorted ids (int32). They were produced by
`test_expected_values_match_the_oracle` (pytest -m oracle) with llama-cpp-python 0.3.36.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyllama.grammar import builtin_grammar
from pyllama.grammar.constraint import GrammarConstraint

EXPECTED = [
    ("json", [], 3, "d8d4792beb6eb8a1b41374310b95e56939fafb13"),
    ("json", [39428, 81, 1799, 216], 73, "86de5be7683acc310427152223f880f313be2b8b"),
    ("json", [39428, 81, 1799, 476, 177], 74, "54253a225467d784511316f3965c230b2c1f7e7c"),  # inside 日 (2 bytes missing)
    ("json", [39428, 81, 1799, 933, 33, 28, 216, 34], 53, "c2e0e3e0e55651391740f93a46822df3749439b1"),
    ("json", [39428, 81, 1799, 9583, 82, 1799, 10034, 109], 35, "9581e5277b4166322fdd42aabc1ff0c722da5da8"),
    ("json", [39428, 81, 1799, 476, 104, 12332], 48799, "4992f41660640d7ea7468f7e68f49adf20543dee"),
    ("json", [39428, 81, 1799, 476, 23274], 64, "f85330a13273146c6836a2f0b1c9be08c8f0530c"),
    ("japanese", [], 206, "bfc2f0be499ac55004078ff149847021ef6091db"),
    ("japanese", [23274, 115, 40993, 179, 120, 248, 26453], 219, "dcde23d4f87c362e8a9fa3a9bb54c9958cc96ab7"),
]

ORACLE_PYTHON = Path("/work/oracle/venv/bin/python")
ORACLE_SCRIPT = r'''
import ctypes, hashlib, json, sys
import numpy as np
import llama_cpp as L
path, spec = sys.argv[1], json.loads(sys.argv[2])
L.llama_backend_init()
mp = L.llama_model_default_params(); mp.vocab_only = True
model = L.llama_model_load_from_file(path.encode(), mp)
vocab = L.llama_model_get_vocab(model)
n = L.llama_vocab_n_tokens(vocab)
out = []
for grammar, prefix in spec:
    smpl = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    for t in prefix:
        L.llama_sampler_accept(smpl, t)
    data = (L.llama_token_data * n)()
    for i in range(n):
        data[i].id = i
    arr = L.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
    L.llama_sampler_apply(smpl, ctypes.byref(arr))
    allowed = np.asarray([i for i in range(n) if data[i].logit != float("-inf")], dtype=np.int32)
    out.append([len(allowed), hashlib.sha1(allowed.tobytes()).hexdigest()])
    L.llama_sampler_free(smpl)
print(json.dumps(out))
'''


def ours(pieces: list[bytes], eog: frozenset[int], name: str, prefix: list[int]) -> tuple[int, str]:
    gc = GrammarConstraint.from_text(builtin_grammar(name), pieces, eog)
    for t in prefix:
        gc.accept(t)
    allowed = np.flatnonzero(gc.allowed_mask()).astype(np.int32)
    return int(allowed.size), hashlib.sha1(allowed.tobytes()).hexdigest()


@pytest.mark.parametrize(("name", "prefix", "count", "sha1"), EXPECTED)
def test_masks_equal_llama_cpp(
    smollm2_vocab: tuple[list[bytes], frozenset[int]], name: str, prefix: list[int], count: int, sha1: str
) -> None:
    pieces, eog = smollm2_vocab
    assert ours(pieces, eog, name, prefix) == (count, sha1)


@pytest.mark.oracle
def test_expected_values_match_the_oracle(smollm2_path: Path) -> None:
    if not ORACLE_PYTHON.exists():
        pytest.skip("llama-cpp-python oracle not built")
    spec = [(builtin_grammar(name), prefix) for name, prefix, _, _ in EXPECTED]
    out = subprocess.run(
        [str(ORACLE_PYTHON), "-c", ORACLE_SCRIPT, str(smollm2_path), json.dumps(spec)],
        capture_output=True, text=True, check=True, env={**os.environ, "LLAMA_LOG_LEVEL": "0"},
    ).stdout  # fmt: skip
    assert [tuple(x) for x in json.loads(out)] == [(c, s) for _, _, c, s in EXPECTED]
