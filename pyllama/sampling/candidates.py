"""The candidates array every sampler reads and narrows (llama.cpp's llama_token_data_array).

Samplers work on parallel NumPy arrays instead of an array of structs. Order matters:
llama.cpp's final `dist` draw walks the candidates in their current order, so each
sampler keeps (or sorts) the order exactly where llama.cpp does, and the `sorted` flag
means "descending by logit" as in llama.cpp. Sorts are stable, so equal logits keep the
lower token id first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


@dataclass
class Candidates:
    ids: I32
    logits: F32
    probs: F32 | None = None
    sorted: bool = False
    selected: int = -1

    @classmethod
    def from_logits(cls, logits: npt.ArrayLike, ids: I32 | None = None) -> Candidates:
        row = np.array(logits, dtype=np.float32, copy=True).reshape(-1)
        if ids is None:
            ids = np.arange(row.size, dtype=np.int32)
        return cls(ids=ids, logits=row)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def take(self, index: npt.NDArray[np.intp] | slice, *, sorted: bool) -> Candidates:
        """The candidates at `index` (in that order)."""
        probs = None if self.probs is None else self.probs[index]
        return Candidates(self.ids[index], self.logits[index], probs, sorted)

    def selected_id(self) -> int:
        if self.selected < 0:
            raise RuntimeError("no token was selected: the chain has no final sampler")
        return int(self.ids[self.selected])


def sort_desc(c: Candidates, k: int | None = None) -> Candidates:
    """The top `k` (default all) candidates by logit, descending; ties keep the lower position.

    `argpartition` first when k is small: sorting 262k logits every token costs ~20 ms,
    selecting 40 costs well under 1 ms.
    """
    n = c.size
    if k is None or k >= n:
        order = np.argsort(-c.logits, kind="stable")
        return c.take(order, sorted=True)
    if k <= 0:
        return c.take(slice(0, 0), sorted=True)
    # the k-th largest value; everything strictly above it plus enough ties at it
    part = np.argpartition(c.logits, n - k)[n - k :]
    kth = c.logits[part].min()
    above = np.flatnonzero(c.logits > kth)
    ties = np.flatnonzero(c.logits == kth)[: k - above.size]
    chosen = np.concatenate([above, ties])
    order = chosen[np.argsort(-c.logits[chosen], kind="stable")]
    return c.take(order, sorted=True)


def softmax(c: Candidates, *, do_sort: bool) -> Candidates:
    """llama_sampler_softmax_impl: probs over the current candidates (float32, sequential sum)."""
    if c.size == 0:
        raise RuntimeError("softmax over zero candidates")
    if do_sort and not c.sorted:
        c = sort_desc(c)
    max_l = c.logits[0] if c.sorted else c.logits.max()
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(c.logits - max_l, dtype=np.float32)
    total = np.cumsum(p, dtype=np.float32)[-1]
    c.probs = (p / total).astype(np.float32, copy=False)
    return c
