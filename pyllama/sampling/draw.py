"""The samplers that pick the token: dist (the default), mirostat v1 and v2.

Each owns an MT19937 seeded like llama.cpp's, so a fixed seed draws the same token
sequence as llama.cpp given the same logits.
"""

from __future__ import annotations

import math

import numpy as np

from pyllama.sampling.candidates import Candidates, softmax
from pyllama.sampling.rng import MT19937
from pyllama.sampling.truncation import top_k


class Dist:
    """llama_sampler_dist: softmax and one uniform draw walking the cumulative mass."""

    name = "dist"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = MT19937(seed)

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        self.rng.seed(self.seed)

    def apply(self, c: Candidates) -> Candidates:
        if c.size == 0:
            c.selected = -1
            return c
        if c.size == 1:
            self.rng.uniform_double()  # llama.cpp draws even here to keep streams aligned
            c.probs = np.ones(1, dtype=np.float32)
            c.selected = 0
            return c
        max_l = c.logits[0] if c.sorted else c.logits.max()
        with np.errstate(invalid="ignore"):
            p = np.exp(c.logits - max_l, dtype=np.float32)
        running = np.cumsum(p, dtype=np.float64)
        total = float(running[-1])
        target = total * self.rng.uniform_double()
        hit = int(np.searchsorted(running, target, side="left"))
        c.selected = min(hit, c.size - 1)
        c.probs = (p.astype(np.float64) / total).astype(np.float32)
        return c


class Mirostat:
    """Mirostat 1.0: estimate the Zipf exponent, pick k to hit the target surprise tau."""

    name = "mirostat"

    def __init__(self, n_vocab: int, seed: int, tau: float, eta: float, m: int = 100) -> None:
        self.n_vocab = n_vocab
        self.seed = seed
        self.tau = np.float32(tau)
        self.eta = np.float32(eta)
        self.m = m
        self.mu = np.float32(2.0 * tau)
        self.rng = MT19937(seed)

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        self.mu = np.float32(2.0 * self.tau)
        self.rng.seed(self.seed)

    def apply(self, c: Candidates) -> Candidates:
        c = softmax(c, do_sort=True)
        assert c.probs is not None
        n = min(self.m - 1, c.size - 1)
        i = np.arange(n, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.log((i + 2) / (i + 1)).astype(np.float32)
            b = np.log(c.probs[:n] / c.probs[1 : n + 1]).astype(np.float32)
            s_hat = np.float32(np.cumsum(t * b, dtype=np.float32)[-1] / np.cumsum(t * t, dtype=np.float32)[-1]) if n else np.float32(np.nan)
            eps = s_hat - np.float32(1)
            k = float(
                np.power(
                    (eps * np.power(np.float32(2), self.mu)) / (np.float32(1) - np.power(np.float32(self.n_vocab), -eps)),
                    np.float32(1) / s_hat,
                )
            )
        # C's int() of a non-finite or huge float yields INT_MIN on x86, which max(., 1) makes 1
        k_int = int(k) if math.isfinite(k) and abs(k) < 2**31 else -(2**31)
        c = top_k(c, max(k_int, 1))
        c = softmax(c, do_sort=True)
        assert c.probs is not None
        idx = self.rng.discrete(c.probs)
        c.selected = idx
        self._update(float(c.probs[idx]))
        return c

    def _update(self, p: float) -> None:
        surprise = np.float32(-math.log2(p)) if p > 0 else np.float32(np.inf)
        self.mu = np.float32(self.mu - self.eta * (surprise - self.tau))


class MirostatV2(Mirostat):
    """Mirostat 2.0: drop tokens whose surprise exceeds mu, then draw."""

    name = "mirostat-v2"

    def __init__(self, seed: int, tau: float, eta: float) -> None:
        super().__init__(0, seed, tau, eta)

    def apply(self, c: Candidates) -> Candidates:
        c = softmax(c, do_sort=True)
        assert c.probs is not None
        with np.errstate(divide="ignore"):
            surprise = -np.log2(c.probs)
        over = np.flatnonzero(surprise > self.mu)
        n = int(over[0]) if over.size else c.size
        c = c.take(slice(0, max(n, 1)), sorted=True)
        c = softmax(c, do_sort=True)
        assert c.probs is not None
        idx = self.rng.discrete(c.probs)
        c.selected = idx
        self._update(float(c.probs[idx]))
        return c


class AdaptiveP:
    """adaptive-p: reshape probabilities to favour tokens near a moving target probability."""

    name = "adaptive-p"
    _WIDTH_INV = np.float32(1.0 / 0.3)
    _PEAK = np.float32(5.0)
    _SHARPNESS = np.float32(10.0)

    def __init__(self, target: float, decay: float, seed: int) -> None:
        self.target = np.float32(target)
        self.decay = np.float32(min(max(decay, 0.0), 0.99))
        self.seed = seed
        self.rng = MT19937(seed)
        self.reset()

    def reset(self) -> None:
        self.weighted_sum = np.float32(self.target / (np.float32(1) - self.decay))
        self.total_weight = np.float32(np.float32(1) / (np.float32(1) - self.decay))
        self.pending: tuple[int, float] | None = None
        self.rng.seed(self.seed)

    def accept(self, token: int) -> None:
        if self.pending is not None and self.pending[0] == token:
            self.weighted_sum = np.float32(self.pending[1] + self.decay * self.weighted_sum)
            self.total_weight = np.float32(1 + self.decay * self.total_weight)
        self.pending = None

    def apply(self, c: Candidates) -> Candidates:
        c = softmax(c, do_sort=False)
        assert c.probs is not None
        if self.target < 0:
            c.selected = self.rng.discrete(c.probs)
            return c
        original = c.probs
        target = np.float32(min(max(float(self.target), 0.0), 1.0))
        adapted = target if self.total_weight == 0 else np.float32(2) * target - self.weighted_sum / self.total_weight
        adapted = np.float32(min(max(float(adapted), 0.0), 1.0))
        dist = np.abs((original - adapted) * self._WIDTH_INV)
        shaped = (self._PEAK - self._SHARPNESS * dist * dist / (np.float32(1) + dist)).astype(np.float32)
        logits = np.where(c.logits == -np.inf, c.logits, shaped).astype(np.float32)
        c = softmax(Candidates(c.ids, logits, None, c.sorted), do_sort=False)
        assert c.probs is not None
        idx = self.rng.discrete(c.probs)
        c.selected = idx
        self.pending = (int(c.ids[idx]), float(original[idx]))
        return c
