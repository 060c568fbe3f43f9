"""The reasoning budget: end a model's thinking after N tokens (llama.cpp's
common/reasoning-budget.cpp, `--reasoning-budget N` and `reasoning_budget_tokens`).

A state machine over the token ids the sequence accepts. It is idle until the start tag's
tokens appear (in the generation prompt, which the template may end with `<think>`, or in
the output); then it counts the thinking tokens. The block may end on its own (an end tag:
done). When the budget runs out - and the last piece completes a UTF-8 character, so no
character is cut in two - it forces the end: the next tokens are, one by one, the forced
sequence (an optional message, then the first end tag), every other logit set to -inf
before the sampler chain runs, as llama.cpp's sampler does. A later start tag re-arms it
with a fresh budget (models that think more than once per reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IDLE, COUNTING, WAITING_UTF8, FORCING, DONE = "idle", "counting", "waiting_utf8", "forcing", "done"


@dataclass(frozen=True)
class BudgetSpec:
    """One request's budget, in token ids (llama.cpp's reasoning_budget_* sampling params)."""

    budget: int  # thinking tokens allowed; a negative value means no limit (the machine only watches)
    start: tuple[tuple[int, ...], ...]  # the start tag(s)
    end: tuple[tuple[int, ...], ...]  # the end tag(s); a block ends on any of them
    forced: tuple[int, ...]  # what is forced when the budget runs out: message + first end tag
    prefill: tuple[int, ...] = ()  # the generation prompt's tokens, accepted before generating


def utf8_is_complete(data: bytes) -> bool:
    """True when `data` does not end inside a UTF-8 character (common_utf8_is_complete)."""
    if not data:
        return True
    for i in range(1, min(4, len(data)) + 1):
        c = data[-i]
        if c & 0xC0 != 0x80:
            expected = 4 if c >= 0xF0 else 3 if c >= 0xE0 else 2 if c >= 0xC0 else 1
            return i >= expected
    return False


class _Matcher:
    """Which of several token sequences ends at the latest token (llama.cpp uses Aho-Corasick;
    a tail comparison over the last max-length tokens gives the same answers)."""

    def __init__(self, seqs: Sequence[Sequence[int]]) -> None:
        unique: list[tuple[int, ...]] = []
        for seq in seqs:
            if seq and tuple(seq) not in unique:
                unique.append(tuple(seq))
        self.seqs = unique
        self._longest = max((len(s) for s in unique), default=0)
        self._tail: list[int] = []

    def advance(self, token: int) -> int:
        """The index of the longest sequence ending here, or -1 (a match starts afresh)."""
        if not self.seqs:
            return -1
        self._tail.append(token)
        if len(self._tail) > self._longest:
            del self._tail[0]
        best, best_len = -1, 0
        for i, seq in enumerate(self.seqs):
            n = len(seq)
            if n > best_len and n <= len(self._tail) and tuple(self._tail[-n:]) == seq:
                best, best_len = i, n
        if best >= 0:
            self._tail.clear()
        return best

    def reset(self) -> None:
        self._tail.clear()


class ReasoningBudget:
    """The budget's state for one sequence: `forced_token()` before sampling, `accept()` after."""

    def __init__(self, spec: BudgetSpec, pieces: Sequence[bytes] | None = None) -> None:
        self.spec = spec
        self.pieces = pieces
        self.budget = spec.budget if spec.budget >= 0 else 2**31 - 1
        self.start = _Matcher(spec.start)
        self.end = _Matcher(spec.end)
        self.state = IDLE
        self.remaining = self.budget
        self.force_pos = 0
        for token in spec.prefill:
            self.accept(token)

    def _open(self) -> None:
        self.state = COUNTING
        self.remaining = self.budget
        if self.remaining <= 0:
            self._force()

    def _force(self) -> None:
        self.state = FORCING
        self.force_pos = 0
        self.end.reset()

    def accept(self, token: int) -> None:
        if self.state == IDLE:
            if self.start.advance(token) >= 0:
                self._open()
        elif self.state in (COUNTING, WAITING_UTF8):
            if self.end.advance(token) >= 0:
                self.state = DONE
                return
            complete = True
            if self.pieces is not None and 0 <= token < len(self.pieces):
                complete = utf8_is_complete(self.pieces[token])
            if self.state == WAITING_UTF8:
                if complete:
                    self._force()
            else:
                self.remaining -= 1
                if self.remaining <= 0:
                    if complete:
                        self._force()
                    else:
                        self.state = WAITING_UTF8
                        self.end.reset()
        elif self.state == FORCING:
            self.end.advance(token)
            self.force_pos += 1
            if self.force_pos >= len(self.spec.forced):
                self.state = DONE
        elif self.start.advance(token) >= 0:  # DONE: a new block gets a fresh budget
            self.end.reset()
            self._open()

    def force(self) -> bool:
        """End the thinking block now (common_reasoning_budget_force, the control route's
        `reasoning_end`): only a block being counted is forced; False in any other state."""
        if self.state != COUNTING:
            return False
        self._force()
        return True

    def forced_token(self) -> int | None:
        """The token the next step must produce, or None when the budget does not intervene."""
        if self.state == FORCING and self.force_pos < len(self.spec.forced):
            return self.spec.forced[self.force_pos]
        return None

    def apply(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """`logits` with every token but the forced one at -inf (a copy), or as they are."""
        forced = self.forced_token()
        if forced is None or not 0 <= forced < logits.shape[0]:
            return logits
        out = np.full(logits.shape, -np.inf, dtype=np.float32)
        out[forced] = logits[forced] if np.isfinite(logits[forced]) else 0.0
        return out

    def reset(self) -> None:
        self.state = IDLE
        self.remaining = self.budget
        self.force_pos = 0
        self.start.reset()
        self.end.reset()
