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
from typing import Any

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

path, out, tokens, embed, n_ctx, rank = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5]), sys.argv[6] == "1"
extra = json.loads(sys.argv[7])
m = Llama(
    path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, verbose=False, flash_attn=False,
    type_k=0, type_v=0, n_threads=2, embedding=embed,
    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE if embed else llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
    **extra,
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
pooled = {}
if embed:
    # The same input through llama.cpp's own pooling: mean, and rank (the classifier head).
    kinds = [("mean", llama_cpp.LLAMA_POOLING_TYPE_MEAN)] + ([("rank", llama_cpp.LLAMA_POOLING_TYPE_RANK)] if rank else [])
    for name, kind in kinds:
        p = Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, verbose=False, embedding=True, pooling_type=kind, n_threads=2)
        p._batch.set_batch(tokens, n_past=0, logits_all=True)
        p._ctx.decode(p._batch)
        n = 1 if name == "rank" else llama_cpp.llama_model_n_embd(p.model)
        pooled[name] = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(p.ctx, 0), shape=(n,)).copy()
np.savez(out, rows=rows.astype(np.float32), **pooled)
"""


def oracle_rows(path: Path, embed: bool, rank: bool, extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.npz"
        subprocess.run(
            [ORACLE_PYTHON, "-c", ORACLE_SCRIPT, str(path), str(out), json.dumps(synth.PROMPT), "1" if embed else "0",
             str(synth.N_CTX), "1" if rank else "0", json.dumps(extra or {})],
            check=True,
        )
        with np.load(out) as data:
            return {k: np.asarray(data[k]) for k in data.files}


def main(names: list[str]) -> None:
    EXPECTED.mkdir(exist_ok=True)
    for name in names or [*synth.MODELS, *synth.ROPE_FLAGS]:
        base, flags = synth.ROPE_FLAGS.get(name, (name, {}))
        arch = synth.MODELS[base][0]
        with tempfile.TemporaryDirectory() as tmp:
            path = synth.write_model(base, Path(tmp) / f"{base}.gguf")
            got = oracle_rows(
                path, arch in synth.EMBEDDING_ARCHS, name in synth.RERANKERS, synth.oracle_rope_kwargs(flags)
            )
        save: Any = np.savez_compressed  # its stubs do not type **arrays
        save(EXPECTED / f"{name}.npz", prompt=np.asarray(synth.PROMPT), **got)
        rows = got["rows"]
        print(f"{name}: {rows.shape} max|x|={float(np.abs(rows).max()):.3f} extra={sorted(set(got) - {'rows'})}")


if __name__ == "__main__":
    main(sys.argv[1:])
