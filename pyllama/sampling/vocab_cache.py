"""One derived structure per vocabulary, built on first use and reused by every request.

DRY's breaker index and infill's prefix tree cost tens to hundreds of milliseconds to
build from a vocabulary's pieces and never change while that vocabulary lives, so they are
kept here, keyed by the pieces object itself (a model's tokenizer holds one). At most a few
vocabularies are kept: a server serves one or a few models, and an unloaded model's entry
goes with the next clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class VocabCache(Generic[T]):
    """`get(pieces)`: `build(pieces)` the first time for these pieces, the same object after."""

    def __init__(self, build: Callable[[Sequence[bytes]], T], keep: int = 3) -> None:
        self.build = build
        self.keep = keep
        self._built: dict[int, tuple[Sequence[bytes], T]] = {}

    def get(self, pieces: Sequence[bytes]) -> T:
        hit = self._built.get(id(pieces))
        if hit is not None and hit[0] is pieces:
            return hit[1]
        if len(self._built) >= self.keep:
            self._built.clear()
        value = self.build(pieces)
        self._built[id(pieces)] = (pieces, value)
        return value
