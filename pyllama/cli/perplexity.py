"""`pyllama perplexity`: llama-perplexity's method and output.

The text is tokenized once (BOS if the model asks), cut into chunks of n_ctx tokens; each
chunk is evaluated from an empty cache with its first token replaced by BOS (when the
model adds one), and only the second half of each chunk is scored, so every scored token
sees at least n_ctx/2 tokens of context.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from pyllama.cli.common import (
    CliError,
    add_model_args,
    add_thread_args,
    blas_threads,
    guarded,
    load_model,
    log,
)
from pyllama.models import Batch, SeqChunk


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("perplexity", help="perplexity of a text file (llama-perplexity)", description=__doc__)
    add_model_args(p, ctx_default=512)
    add_thread_args(p)
    p.add_argument("-f", "--file", required=True, help="text file to score")
    p.add_argument("--chunks", type=int, default=-1, help="max chunks to evaluate (-1 = all)")
    p.set_defaults(func=guarded(main))


def perplexity(model: object, tokens: list[int], n_ctx: int, bos: int | None, n_chunks: int = -1) -> tuple[float, float, list[float]]:
    """Returns (ppl, stderr of ppl, running ppl after each chunk)."""
    from pyllama.engine import Model

    assert isinstance(model, Model)
    n_chunk = len(tokens) // n_ctx
    if n_chunks >= 0:
        n_chunk = min(n_chunk, n_chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running: list[float] = []
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx : (i + 1) * n_ctx]
        if bos is not None:
            chunk = [bos, *chunk[1:]]
        model.kv.clear(0)
        logits = model.decode(Batch([SeqChunk(0, chunk, 0, "all")])).astype(np.float64)
        rows = logits[first : n_ctx - 1]
        targets = np.asarray(chunk[first + 1 : n_ctx])
        mx = rows.max(axis=1)
        lse = mx + np.log(np.exp(rows - mx[:, None]).sum(axis=1))
        v = lse - rows[np.arange(len(targets)), targets]
        nll += float(v.sum())
        nll2 += float((v * v).sum())
        count += len(targets)
        running.append(math.exp(nll / count))
    if count == 0:
        raise CliError(f"need at least {2 * n_ctx} tokens to evaluate perplexity with a context of {n_ctx}")
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else 0.0
    return ppl, err, running


def main(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8") as fh:
        text = fh.read()
    n_ctx = args.ctx_size
    if n_ctx <= 0:
        raise CliError("-c must be positive for perplexity")
    threads = blas_threads(args)
    model = load_model(args)
    tok = model.tokenizer
    t0 = time.perf_counter()
    tokens = tok.tokenize(text, add_special=True, parse_special=False)
    if len(tokens) < 2 * n_ctx:
        raise CliError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of {n_ctx} "
                       f"(the file has {len(tokens)})")
    log(f"perplexity: tokenization took {1e3 * (time.perf_counter() - t0):.1f} ms, {len(tokens)} tokens")
    log(f"perplexity: calculating perplexity over {len(tokens) // n_ctx} chunks, n_ctx={n_ctx}")
    t1 = time.perf_counter()
    with threads(n_ctx):  # whole chunks of n_ctx tokens: -tb
        ppl, err, running = perplexity(model, tokens, n_ctx, tok.bos_id if tok.add_bos else None, args.chunks)
    print("".join(f"[{i + 1}]{p:.4f}," for i, p in enumerate(running)))
    print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")
    log(f"perplexity: {time.perf_counter() - t1:.2f} s for {len(running)} chunks")
    sys.stdout.flush()
    return 0
