"""Regenerate tests/models/expected/*.npz from llama.cpp (the llama-cpp-python oracle).

Run from the repo root with the project venv:  .venv/bin/python -m tests.models.make_expected [names...]
It writes each synthetic GGUF with synth.py (the very code the tests use), then evaluates
the 32-token prompt in the oracle interpreter (/work/oracle/venv, or $PYLLAMA_ORACLE_PYTHON)
with an f32 KV cache and WITHOUT flash attention (llama.cpp's flash-attention path
casts K/V to f16 and accumulates in f16, a ~1e-3 effect that would swamp architecture
bugs; that kernel is the numerics work), and stores all 32 rows of logits (or, for the
embedding architectures, the per-token embeddings with pooling none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.models import synth

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
ORACLE_PYTHON = os.environ.get("PYLLAMA_ORACLE_PYTHON", "/work/oracle/venv/bin/python")

ORACLE_SCRIPT = r"""
import json, sys
import numpy as np
import llama_cpp
from llama_cpp import Llama

path, out, tokens, embed, n_ctx = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
m = Llama(
    path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, verbose=False, flash_attn=False,
    type_k=0, type_v=0, n_threads=2, embedding=embed,
    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE if embed else llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
)
if embed:
    # No KV memory for encoder models, so bypass eval(): one batch, every row an output.
    m._batch.set_batch(tokens, n_past=0, logits_all=True)
    m._ctx.decode(m._batch)
    n_embd = llama_cpp.llama_model_n_embd(m.model)
    ptr = llama_cpp.llama_get_embeddings(m.ctx)
    rows = np.ctypeslib.as_array(ptr, shape=(len(tokens) * n_embd,)).reshape(len(tokens), n_embd).copy()
else:
    m.eval(tokens)
    rows = np.asarray(m.scores[: len(tokens)], dtype=np.float32)
np.save(out, rows.astype(np.float32))
"""


def oracle_rows(path: Path, embed: bool) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.npy"
        subprocess.run(
            [ORACLE_PYTHON, "-c", ORACLE_SCRIPT, str(path), str(out), json.dumps(synth.PROMPT), "1" if embed else "0",
             str(synth.N_CTX)],
            check=True,
        )
        return np.asarray(np.load(out))


def main(names: list[str]) -> None:
    EXPECTED.mkdir(exist_ok=True)
    for name in names or list(synth.MODELS):
        arch = synth.MODELS[name][0]
        with tempfile.TemporaryDirectory() as tmp:
            path = synth.write_model(name, Path(tmp) / f"{name}.gguf")
            rows = oracle_rows(path, arch in synth.EMBEDDING_ARCHS)
        np.savez_compressed(EXPECTED / f"{name}.npz", rows=rows, prompt=np.asarray(synth.PROMPT))
        print(f"{name}: {rows.shape} max|x|={float(np.abs(rows).max()):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
