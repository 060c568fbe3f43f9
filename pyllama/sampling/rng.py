"""The random numbers llama.cpp's samplers draw, reproduced bit for bit.

llama.cpp seeds a `std::mt19937` per sampler and draws through libstdc++'s
`uniform_real_distribution` / `discrete_distribution`. Python's `random.Random` *is*
MT19937, but seeds itself differently (init_by_array); we set its state to what
`std::mt19937(seed)` (init_genrand) produces, so a given `seed` draws the same numbers
as llama.cpp and a seeded generation can be compared token for token.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence

import numpy as np

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: "draw a random seed"
_TWO32 = float(2**32)
_TWO64 = float(2**64)
_ONE_BELOW_F64 = float(np.nextafter(1.0, 0.0))
_ONE_BELOW_F32 = np.float32(np.nextafter(np.float32(1.0), np.float32(0.0)))


def resolve_seed(seed: int) -> int:
    """A request's seed as the uint32 llama.cpp uses; -1 / 0xFFFFFFFF draw a fresh one."""
    value = seed % 2**32
    if value == DEFAULT_SEED:
        return secrets.randbits(32)
    return value


class MT19937:
    """`std::mt19937` with libstdc++'s real-number adaptors."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random()
        self.seed(seed)

    def seed(self, seed: int) -> None:
        mt = [seed & 0xFFFFFFFF]
        for i in range(1, 624):
            prev = mt[-1]
            mt.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
        self._rng.setstate((3, (*mt, 624), None))

    def next_u32(self) -> int:
        return self._rng.getrandbits(32)

    def uniform_double(self) -> float:
        """`std::uniform_real_distribution<double>(0, 1)`: two draws, low word first."""
        lo = self.next_u32()
        hi = self.next_u32()
        r = (lo + hi * _TWO32) / _TWO64
        return _ONE_BELOW_F64 if r >= 1.0 else r

    def uniform_float(self) -> float:
        """`std::uniform_real_distribution<float>(0, 1)`: one draw rounded to float."""
        r = np.float32(self.next_u32()) / np.float32(_TWO32)
        return float(_ONE_BELOW_F32 if r >= 1.0 else r)

    def discrete(self, probs: Sequence[float] | np.ndarray) -> int:
        """`std::discrete_distribution<int>` over `probs` (need not be normalized)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.size < 2:
            return 0  # libstdc++ returns 0 without drawing for a single weight
        cum = np.cumsum(p / p.sum())
        cum[-1] = 1.0
        u = self.uniform_double()
        return min(int(np.searchsorted(cum, u, side="left")), p.size - 1)
