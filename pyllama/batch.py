"""What one forward pass is asked to compute: chunks of tokens from any number of sequences.

Its own module so the kernel sets (which plan attention per batch) and the architectures
both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

I64 = np.ndarray[Any, np.dtype[np.int64]]

OutputRows = Literal["none", "last", "all"]


@dataclass
class SeqChunk:
    """Consecutive tokens of one sequence, starting at position `pos`."""

    seq: int
    tokens: list[int]
    pos: int
    output: OutputRows = "last"


@dataclass
class Batch:
    """One forward pass: chunks from any number of sequences (continuous batching)."""

    chunks: list[SeqChunk] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.chunks)

    def positions(self) -> I64:
        """The position of every token, chunk after chunk."""
        return np.fromiter((c.pos + i for c in self.chunks for i in range(len(c.tokens))), dtype=np.int64,
                           count=self.n_tokens)

    def output_rows(self) -> I64:
        """Row indices (into the concatenated tokens) whose hidden state is wanted."""
        rows: list[int] = []
        start = 0
        for c in self.chunks:
            n = len(c.tokens)
            if c.output == "all":
                rows.extend(range(start, start + n))
            elif c.output == "last" and n:
                rows.append(start + n - 1)
            start += n
        return np.asarray(rows, dtype=np.int64)
