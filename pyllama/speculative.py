"""Speculative decoding: guess the next tokens cheaply, let the model check them in one pass.

A verified batch of k tokens costs about what a prompt chunk of k tokens costs, far less
than k decode steps, so every accepted guess is a token for (almost) free. The scheduler
asks `Speculator.draft()` for guesses after each sampled token, runs them through the model
together with that token, samples every row with the slot's own sampler and keeps the
guesses up to the first one the sampler did not pick. Sampling each row exactly as a plain
decode step would (same sampler state, same random draws, in the same order) makes the
output the same as without speculation, token for token, whenever the model computes a row
the same inside a batch as alone (exact numerics; docs/numerics.md).

The guessers are llama.cpp's (common/speculative.cpp, common/ngram-map.cpp, common/ngram-mod.cpp), with its
names and defaults:
- `ngram-simple`: find the last n-gram (the n-1 previous tokens and the sampled one) earlier
  in the context; guess the m tokens that followed it.
- `ngram-map-k`: the same lookup over positions that leave room for a whole m-gram, the
  guess shortened to what the same key had accepted last time.
- `ngram-map-k4v`: ngram-map-k that drafts only a key whose followers agree
  (pyllama/ngram_map_k4v.py).
- `ngram-mod`: chained lookups in a hashed n-gram table shared by all slots and kept
  across requests (pyllama/ngram_mod.py).
- `draft-simple` (`-md FILE`): a small model with the same vocabulary drafts greedily,
  up to `n_max` tokens, stopping below probability `p_min`; fewer than `n_min` is no draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from pyllama.errors import InvalidRequestError, PyllamaError
from pyllama.ngram_map_k4v import K4vState, k4v_accepted, k4v_draft
from pyllama.ngram_mod import NgramMod, NgramModParams
from pyllama.sampling.rng import MT19937

if TYPE_CHECKING:
    from pyllama.engine import Model

# Every name llama.cpp's --spec-type knows (common_speculative_type_from_name_map) ...
ALL_TYPES = ("none", "draft-simple", "draft-eagle3", "draft-mtp", "draft-dflash", "draft-dspark",
             "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
# ... and the ones pyllama runs, in llama.cpp's order of preference.
IMPLEMENTED = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "draft-simple")


@dataclass
class NgramParams:
    size_n: int = 12  # length of the lookup n-gram
    size_m: int = 48  # length of the drafted m-gram
    min_hits: int = 1


@dataclass
class SpecParams:
    """One request's speculative settings (the server's flags, overridden per request)."""

    types: tuple[str, ...] = ()
    n_max: int = 3  # draft model: tokens drafted per step (--spec-draft-n-max)
    n_min: int = 0  # draft model: fewer drafted tokens than this are dropped
    p_min: float = 0.0  # draft model: stop drafting below this probability
    ngram_simple: NgramParams = field(default_factory=NgramParams)
    ngram_map_k: NgramParams = field(default_factory=NgramParams)
    ngram_map_k4v: NgramParams = field(default_factory=NgramParams)
    ngram_mod: NgramModParams = field(default_factory=NgramModParams)
    # --spec-synth-len/--spec-synth-rates (benchmarking): per draft position, the chance a
    # guess is accepted given the previous one was, instead of checking it (synth_probs)
    synth_probs: tuple[float, ...] = ()

    @property
    def enabled(self) -> bool:
        return any(t in IMPLEMENTED for t in self.types)

    def to_json(self) -> dict[str, Any]:
        """The generation_settings entries (llama-server's `speculative.types` plus the values
        its request fields take)."""
        return {
            "speculative.types": ",".join(self.types) if self.types else "none",
            "speculative.n_max": self.n_max,
            "speculative.n_min": self.n_min,
            "speculative.p_min": self.p_min,
            "speculative.ngram_size_n": self.ngram_simple.size_n,
            "speculative.ngram_size_m": self.ngram_simple.size_m,
            "speculative.ngram_min_hits": self.ngram_simple.min_hits,
        }

    def with_request(self, body: dict[str, Any]) -> SpecParams:
        """Apply a request's `speculative.*` fields (llama-server's names); 400 on bad values."""
        out = replace(self, ngram_simple=replace(self.ngram_simple), ngram_map_k=replace(self.ngram_map_k),
                      ngram_map_k4v=replace(self.ngram_map_k4v), ngram_mod=replace(self.ngram_mod))

        def number(key: str, lo: float, hi: float, integer: bool) -> Any:
            value = body[key]
            ok = isinstance(value, int | float) and not isinstance(value, bool) and (not integer or float(value).is_integer())
            if not ok or not lo <= value <= hi:
                kind = "an integer" if integer else "a number"
                raise InvalidRequestError(f"'{key}' must be {kind} between {lo:g} and {hi:g}")
            return int(value) if integer else float(value)

        if "speculative.type" in body:
            name = body["speculative.type"]
            if not isinstance(name, str) or name not in ALL_TYPES:
                raise InvalidRequestError(f"'speculative.type' must be one of {', '.join(ALL_TYPES)}")
            out.types = (name,)
        if "speculative.n_max" in body:
            out.n_max = number("speculative.n_max", 0, 1024, True)
        if "speculative.n_min" in body:
            out.n_min = number("speculative.n_min", 0, 1024, True)
        if "speculative.p_min" in body:
            out.p_min = number("speculative.p_min", 0.0, 1.0, False)
        for key, attr in (("ngram_size_n", "size_n"), ("ngram_size_m", "size_m"), ("ngram_min_hits", "min_hits")):
            if f"speculative.{key}" in body:
                value = number(f"speculative.{key}", 1, 1024, True)
                setattr(out.ngram_simple, attr, value)
                setattr(out.ngram_map_k, attr, value)
                setattr(out.ngram_map_k4v, attr, value)
        return out


def parse_types(text: str) -> tuple[tuple[str, ...], list[str]]:
    """--spec-type's comma-separated list: (types to run, names accepted but not run here).
    A name llama.cpp does not know raises ValueError."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ALL_TYPES]
    if bad:
        raise ValueError(f"unknown speculative type {bad[0]!r} (known: {', '.join(ALL_TYPES)})")
    return tuple(n for n in names if n in IMPLEMENTED), [n for n in names if n not in IMPLEMENTED and n != "none"]


def synth_probs(synth_len: float | None, synth_rates: list[float] | None, n_max: int) -> tuple[float, ...]:
    """llama.cpp's synthetic acceptance (common_speculative_synth_rates_resolve): the
    unconditional per-position rates, given or derived from a mean acceptance length
    (geometric rates p, p^2, ... with p found by bisection), turned into the conditional
    chance of accepting guess i once guess i-1 was accepted. ValueError as llama.cpp's."""
    if synth_len is None and not synth_rates:
        return ()
    if synth_len is not None and synth_rates:
        raise ValueError("synthetic acceptance length and rates are mutually exclusive")
    if n_max <= 0:
        raise ValueError("synthetic acceptance requires at least one speculative token")
    if synth_rates:
        rates = list(synth_rates)
        if len(rates) != n_max:
            raise ValueError(f"synthetic acceptance rates must contain {n_max} values, got {len(rates)}")
        if any(not 0.0 <= r <= 1.0 for r in rates):  # NaN fails too
            raise ValueError("synthetic acceptance rates must be finite and within [0, 1]")
        if any(b > a for a, b in pairwise(rates)):
            raise ValueError("synthetic acceptance rates must be monotonically non-increasing")
    else:
        assert synth_len is not None
        if not 1.0 <= synth_len <= n_max + 1.0:
            raise ValueError(f"synthetic acceptance length must be finite and within [1, {n_max + 1}]")
        p = 1.0 if synth_len == n_max + 1.0 else 0.0
        if 1.0 < synth_len < n_max + 1.0:
            lo, hi = 0.0, 1.0
            for _ in range(32):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if sum(mid ** (j + 1) for j in range(n_max)) < synth_len - 1.0 else (lo, mid)
            p = 0.5 * (lo + hi)
        rates = [p ** (i + 1) for i in range(n_max)]
    out, prev = [], 1.0
    for rate in rates:
        out.append(rate / prev if prev > 0.0 else 0.0)
        prev = rate
    return tuple(out)


def _find_back(tokens: np.ndarray[Any, Any], pattern: list[int], last_start: int) -> int:
    """The largest start j in [1, last_start] where `pattern` occurs (0: none). Position 0
    never counts, as in llama.cpp (0 means "no match" there)."""
    if last_start < 1:
        return 0
    n = len(pattern)
    starts = np.flatnonzero(tokens[1 : last_start + 1] == pattern[0]) + 1
    want = np.asarray(pattern, dtype=tokens.dtype)
    for j in starts[::-1]:
        if np.array_equal(tokens[j : j + n], want):
            return int(j)
    return 0


def ngram_simple_draft(tokens: list[int], sampled: int, size_n: int, size_m: int) -> list[int]:
    """common_ngram_simple_draft: `tokens` is the context before `sampled`."""
    cur = len(tokens)
    if cur <= size_n + size_m + 1:
        return []
    pattern = [*tokens[cur - size_n + 1 :], sampled]
    arr = np.asarray(tokens, dtype=np.int64)
    match = _find_back(arr, pattern, cur - size_n - 1)
    if match == 0:
        return []
    copy = min(size_m, cur - (match + size_n))
    if copy < size_n:
        return []
    return [int(t) for t in tokens[match + size_n : match + size_n + copy]]


@dataclass
class MapKState:
    """ngram-map-k's memory for one slot: how many tokens each key's last draft got accepted."""

    accepted: dict[tuple[int, ...], int] = field(default_factory=dict)
    last_key: tuple[int, ...] | None = None


def ngram_map_k_draft(tokens: list[int], sampled: int, p: NgramParams, state: MapKState) -> list[int]:
    """common_ngram_map_draft in key-only mode: the latest earlier occurrence of the key that
    leaves room for an m-gram; the draft is the m tokens after it, cut to what this key had
    accepted last time."""
    n, m = p.size_n, p.size_m
    state.last_key = None
    cur = len(tokens)
    if cur < 2 * n + m:
        return []
    key = [*tokens[cur - n + 1 :], sampled]
    match = _find_back(np.asarray(tokens, dtype=np.int64), key, cur - n - m - 1)
    if match == 0:
        return []
    k = tuple(key)
    state.last_key = k
    take = min(m, state.accepted.get(k, m))
    return [int(t) for t in tokens[match + n : match + n + take]]


class DraftModel:
    """draft-simple: a second, smaller model with the target's vocabulary, one KV sequence
    per slot. Each call catches the draft cache up with the slot's context (only what
    changed since the last call) and drafts greedily."""

    def __init__(self, model: Model, target: Model) -> None:
        if model.n_vocab != target.n_vocab and abs(model.n_vocab - target.n_vocab) > 128:
            raise InvalidRequestError(
                f"the draft model's vocabulary ({model.n_vocab} tokens) does not match the target's ({target.n_vocab})")
        if model.n_seq < target.n_seq:
            raise InvalidRequestError("the draft model needs a KV sequence per slot")
        self.model = model
        self.n_vocab = target.n_vocab  # a drafted id the target does not have ends the draft
        self.cached: dict[int, list[int]] = {}

    def draft(self, seq: int, tokens: list[int], n_max: int, n_min: int, p_min: float) -> list[int]:
        from pyllama.kv_cache import common_prefix
        from pyllama.models import Batch, SeqChunk

        model, kv = self.model, self.model.kv
        if n_max <= 0 or len(tokens) + n_max > model.n_ctx_seq:
            return []
        n = min(common_prefix(self.cached.get(seq, []), tokens), len(tokens) - 1, kv.length(seq))
        kv.truncate(seq, n)
        self.cached[seq] = tokens[:n]
        out: list[int] = []
        try:
            logits = model.decode(Batch([SeqChunk(seq, tokens[n:], n, "last")]))[0]
            self.cached[seq] = list(tokens)
            while len(out) < n_max:
                best = int(np.argmax(logits))
                z = logits.astype(np.float64) - float(logits[best])
                if best >= self.n_vocab or 1.0 / float(np.exp(z).sum()) < p_min:
                    break
                out.append(best)
                if len(out) == n_max:
                    break
                logits = model.decode(Batch([SeqChunk(seq, [best], len(tokens) + len(out) - 1, "last")]))[0]
                self.cached[seq].append(best)
        except PyllamaError:
            return []
        return out if len(out) >= n_min else []


class Speculator:
    """What the scheduler calls: drafts for one slot by the request's types, first that guesses
    wins (llama.cpp's order); only the type that drafted hears how many guesses were kept."""

    def __init__(self, draft_model: DraftModel | None = None) -> None:
        self.draft_model = draft_model
        self._map_k: dict[int, MapKState] = {}
        self._k4v: dict[int, K4vState] = {}
        self._mod: NgramMod | None = None  # one table for every slot, kept across requests
        self._last_kind: dict[int, str] = {}
        self._synth: dict[int, MT19937] = {}

    def _ngram_mod(self, p: NgramModParams) -> NgramMod:
        if self._mod is None or self._mod.n != p.n_match:
            self._mod = NgramMod(p.n_match)
        return self._mod

    def begin(self, seq: int, prompt: list[int] | None = None, p: SpecParams | None = None) -> None:
        """A task starts on `seq`; ngram-mod adds its prompt to the shared table."""
        self._map_k[seq] = MapKState()
        self._k4v[seq] = K4vState()
        self._last_kind.pop(seq, None)
        self._synth.pop(seq, None)
        if p is not None and prompt is not None and "ngram-mod" in p.types:
            self._ngram_mod(p.ngram_mod).begin(seq, prompt)

    def synth_accept(self, seq: int, seed: int, p: float) -> bool:
        """One synthetic acceptance draw (llama-server: a std::mt19937 per slot, seeded with
        the request's seed when its task starts, drawn through uniform_real_distribution)."""
        rng = self._synth.get(seq)
        if rng is None:
            rng = self._synth[seq] = MT19937(seed)
        return rng.uniform_double() < p

    def draft(self, seq: int, tokens: list[int], sampled: int, p: SpecParams, n_limit: int) -> list[int]:
        """Up to `n_limit` guesses for what follows `tokens + [sampled]`."""
        if n_limit <= 0:
            return []
        for kind in IMPLEMENTED:
            if kind not in p.types:
                continue
            if kind == "ngram-simple":
                out = ngram_simple_draft(tokens, sampled, p.ngram_simple.size_n, p.ngram_simple.size_m)
            elif kind == "ngram-map-k":
                out = ngram_map_k_draft(tokens, sampled, p.ngram_map_k, self._map_k.setdefault(seq, MapKState()))
            elif kind == "ngram-map-k4v":
                k4v = p.ngram_map_k4v
                out = k4v_draft(tokens, sampled, k4v.size_n, k4v.size_m, k4v.min_hits, self._k4v.setdefault(seq, K4vState()))
            elif kind == "ngram-mod":
                out = self._ngram_mod(p.ngram_mod).draft(seq, tokens, sampled, p.ngram_mod)
            elif self.draft_model is not None:
                n_max = min(p.n_max, n_limit)
                out = self.draft_model.draft(seq, [*tokens, sampled], n_max, p.n_min, p.p_min)
            else:
                out = []
            if out:
                self._last_kind[seq] = kind
                return out[:n_limit]
        return []

    def accepted(self, seq: int, n_accepted: int) -> None:
        kind = self._last_kind.get(seq)
        state = self._map_k.get(seq)
        if kind == "ngram-map-k" and state is not None and state.last_key is not None:
            state.accepted[state.last_key] = n_accepted  # llama.cpp: the next draft of this key is this long
            state.last_key = None
        elif kind == "ngram-map-k4v" and seq in self._k4v:
            k4v_accepted(self._k4v[seq], n_accepted)
        elif kind == "ngram-mod" and self._mod is not None:
            self._mod.accept(seq, n_accepted)
