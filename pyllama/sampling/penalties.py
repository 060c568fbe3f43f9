"""Repetition penalties (repeat / frequency / presence) and logit bias.

Penalties remember the last `repeat_last_n` accepted tokens (prompt tokens included, as
llama-server feeds the prompt through `accept`). A per-vocabulary count array makes
`apply` one gather over the candidates instead of a dictionary walk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from pyllama.sampling.candidates import Candidates


class Penalties:
    """llama_sampler_penalties."""

    name = "penalties"

    def __init__(
        self,
        n_vocab: int,
        last_n: int,
        repeat: float,
        freq: float,
        present: float,
        *,
        exempt: Sequence[int] = (),
    ) -> None:
        self.n_vocab = n_vocab
        self.last_n = max(last_n, 0)
        self.repeat = np.float32(repeat)
        self.freq = np.float32(freq)
        self.present = np.float32(present)
        self.disabled = self.last_n == 0 or (repeat == 1.0 and freq == 0.0 and present == 0.0)
        self.exempt = np.asarray(list(exempt), dtype=np.int64)
        self.prev: deque[int] = deque()
        self.counts = np.zeros(n_vocab if not self.disabled else 0, dtype=np.int32)

    def accept(self, token: int) -> None:
        if self.disabled or not 0 <= token < self.n_vocab:
            return
        self.counts[token] += 1
        if len(self.prev) >= self.last_n:
            self.counts[self.prev.popleft()] -= 1
        self.prev.append(token)

    def reset(self) -> None:
        self.prev.clear()
        if self.counts.size:
            self.counts[:] = 0

    def apply(self, c: Candidates) -> Candidates:
        if self.disabled:
            return c
        count = self.counts[c.ids]
        if self.exempt.size:
            count[np.isin(c.ids, self.exempt)] = 0
        hit = np.flatnonzero(count)
        if hit.size == 0:
            c.sorted = False
            return c
        logits = c.logits.copy()
        sel = logits[hit]
        sel = np.where(sel <= 0, sel * self.repeat, sel / self.repeat).astype(np.float32)
        n = count[hit].astype(np.float32)
        sel -= n * self.freq + np.float32(1.0) * self.present
        logits[hit] = sel
        return Candidates(c.ids, logits, c.probs, False)


class LogitBias:
    """llama_sampler_logit_bias: add fixed biases (-inf bans a token)."""

    name = "logit_bias"

    def __init__(self, n_vocab: int, biases: Sequence[tuple[int, float]]) -> None:
        kept = [(int(t), float(b)) for t, b in biases if 0 <= int(t) < n_vocab]
        self.tokens = np.asarray([t for t, _ in kept], dtype=np.int64)
        self.biases = np.asarray([b for _, b in kept], dtype=np.float32)
        # per distinct token, its biases summed once (the path for reordered or cut candidates)
        total: dict[int, float] = {}
        for t, b in zip(self.tokens.tolist(), self.biases.tolist(), strict=True):
            total[t] = total.get(t, 0.0) + b
        self._distinct = np.asarray(sorted(total), dtype=np.int64)
        self._summed = np.asarray([total[t] for t in sorted(total)], dtype=np.float64)

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def apply(self, c: Candidates) -> Candidates:
        if self.tokens.size == 0:
            return c
        logits = c.logits.copy()
        n = c.size
        full = n > 0 and int(c.ids[0]) == 0 and int(c.ids[-1]) == n - 1 and n >= int(self.tokens.max()) + 1
        if full and bool(np.all(c.ids[self.tokens] == self.tokens)):
            np.add.at(logits, self.tokens, self.biases)
        else:  # candidates were reordered or cut: find the biased tokens among them
            at = np.flatnonzero(np.isin(c.ids, self._distinct))
            summed = self._summed[np.searchsorted(self._distinct, c.ids[at])].astype(np.float32)
            logits[at] += summed
        return Candidates(c.ids, logits, c.probs, c.sorted)
