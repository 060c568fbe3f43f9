"""Embeddings: pooling and normalisation of hidden states (llama.cpp's --pooling, --embd-normalize).

The hidden state is the final-normed output of the last block (llama.cpp's `t_embd`,
"result_norm"); pooling follows llm_graph_context::build_pooling:
    none  every token's vector           mean  the average over the sequence
    cls   the first token's              last  the last token's
    rank  the first token (the last on a causal model) through the classifier head
          (cls, cls.output) -> relevance score(s)
A model's default pooling comes from `{arch}.pooling_type`; without one llama.cpp uses none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pyllama.errors import InvalidRequestError
from pyllama.linear import Linear
from pyllama.models.base import Batch, SeqChunk
from pyllama.ops import softmax

if TYPE_CHECKING:
    from pyllama.engine import Model
    from pyllama.tasks import Final, Task

F32 = np.ndarray[Any, np.dtype[np.float32]]

POOLING = ("none", "mean", "cls", "last", "rank")


@dataclass
class RankHead:
    """The sequence-classification head rerankers carry: tanh(cls·x + b), then cls.output."""

    cls: Linear | None
    cls_b: F32 | None
    out: Linear | None
    out_b: F32 | None
    softmax: bool = False  # Qwen3 rerankers turn the scores into probabilities
    last_token: bool = False  # causal rerankers read the last token (llama-graph's inp_cls for RANK)

    @classmethod
    def from_model(cls, model: Model) -> RankHead:
        w = model.net.w
        head = cls(
            w.optional_linear("cls.weight"),
            w.optional_vector("cls.bias"),
            w.optional_linear("cls.output.weight"),
            w.optional_vector("cls.output.bias"),
            model.config.arch in ("qwen3", "qwen3vl"),
            bool(model.net.causal),  # the attention the engine runs (BERTs are bidirectional)
        )
        return head

    def __call__(self, x: F32) -> F32:
        if self.cls is None and self.out is None:
            # No classifier head (a plain LM run with --reranking): llama.cpp's RANK pooling
            # then yields the pooled hidden state and the server reads its first n_cls_out (1)
            # floats as the score, so a client gets scores instead of an error.
            return x[..., :1]
        if self.cls is not None:
            x = self.cls(x)
            if self.cls_b is not None:
                x = x + self.cls_b
            x = np.tanh(x)
        if self.out is not None:
            x = self.out(x)
            if self.out_b is not None:
                x = x + self.out_b
        return softmax(x) if self.softmax else x


def pool(hidden: F32, pooling: str, rank_head: RankHead | None = None) -> F32:
    """(T, D) hidden states of one sequence -> (1, D) pooled, (T, D) for `none`, (1, n_cls) for `rank`."""
    if pooling == "none":
        return hidden
    if pooling == "mean":
        return np.asarray(hidden.mean(axis=0, keepdims=True, dtype=np.float64), dtype=np.float32)
    if pooling == "cls":
        return hidden[:1]
    if pooling == "last":
        return hidden[-1:]
    if pooling == "rank":
        if rank_head is None:
            raise InvalidRequestError("pooling 'rank' needs the model's classifier head (use embed())")
        return rank_head(hidden[-1:] if rank_head.last_token else hidden[:1])
    raise InvalidRequestError(f"unknown pooling {pooling!r} (supported: {', '.join(POOLING)})")


def normalize(v: F32, mode: int) -> F32:
    """common_embd_normalize: -1 none, 0 max-abs (int16 scale), 1 taxicab, 2 euclidean, >2 p-norm."""
    x = v.astype(np.float64)
    if mode < 0:
        s = 1.0
    elif mode == 0:
        s = float(np.abs(x).max()) / 32760.0
    elif mode == 1:
        s = float(np.abs(x).sum())
    elif mode == 2:
        s = float(np.sqrt((x * x).sum()))
    else:
        s = float((np.abs(x) ** mode).sum() ** (1.0 / mode))
    norm = 1.0 / s if s > 0 else 0.0
    return np.asarray(x * norm, dtype=np.float32)


def default_pooling(model: Model) -> str:
    """The GGUF's pooling_type, else `none` (llama_context's rule for an unspecified type)."""
    p = model.config.pooling
    return "none" if p == "unspecified" else p


def embed(model: Model, tokens: Sequence[int], *, pooling: str | None = None, normalize_mode: int = 2, seq: int = 0) -> F32:
    """Embed one input: evaluate it whole on sequence `seq`, pool, normalise each row.

    Returns (1, D) for mean/cls/last, (T, D) for none, (1, n_cls) for rank (not normalised,
    as llama-server returns rerank scores raw).
    """
    if not tokens:
        raise InvalidRequestError("cannot embed an empty input")
    how = default_pooling(model) if pooling is None else pooling
    if how not in POOLING:
        raise InvalidRequestError(f"unknown pooling {how!r} (supported: {', '.join(POOLING)})")
    model.kv.truncate(seq, 0)
    try:
        hidden = model.hidden(Batch([SeqChunk(seq, list(tokens), 0, "all")]))
    finally:
        model.kv.truncate(seq, 0)
    if how == "rank":
        return pool(hidden, how, RankHead.from_model(model))
    pooled = pool(hidden, how)
    return np.stack([normalize(v, normalize_mode) for v in pooled]).astype(np.float32)


def embed_task(model: Model, seq: int, task: Task) -> Final:
    """An embedding task's result: its whole input in one pass on sequence `seq` (whose KV
    cells are cleared before and after), pooled and normalised as the task asks."""
    import time

    from pyllama.tasks import Final

    t0 = time.perf_counter()
    # The rank head is looked up first: a model without one fails before any evaluation.
    head = RankHead.from_model(model) if task.pooling == "rank" else None
    model.kv.truncate(seq, 0)
    try:
        hidden = model.hidden(Batch([SeqChunk(seq, task.prompt, 0, "all")]))
    finally:
        model.kv.truncate(seq, 0)
    vectors = pool(hidden, task.pooling, head)
    # Rerank scores are returned raw (llama-server's send_rerank reads embd[0] unnormalised).
    rows = [v.tolist() for v in vectors] if head is not None else [normalize(v, task.normalize).tolist() for v in vectors]
    return Final(
        task.id,
        n_prompt=len(task.prompt),
        prompt_ms=1e3 * (time.perf_counter() - t0),
        slot_id=seq,
        embedding=rows,
    )
