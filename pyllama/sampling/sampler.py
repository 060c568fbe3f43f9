"""The sampler chain one generating sequence owns (llama.cpp's common_sampler).

Built from `SamplingParams` the way common/sampling.cpp assembles it: logit bias first,
then the samplers in `params.samplers` order, then the drawing sampler (`dist`, or
mirostat which replaces the whole chain). A grammar, when given, is checked against the
sampled token first; only when it rejects the token is the full vocabulary filtered and
the chain run again (llama.cpp's "grammar-based rejection sampling").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pyllama.errors import InvalidRequestError
from pyllama.sampling import draw, truncation
from pyllama.sampling.candidates import Candidates
from pyllama.sampling.dry import Dry, Tokenize, process_breakers
from pyllama.sampling.infill import infill
from pyllama.sampling.params import SamplingParams
from pyllama.sampling.penalties import LogitBias, Penalties
from pyllama.sampling.reasoning_budget import ReasoningBudget
from pyllama.sampling.rng import MT19937, resolve_seed
from pyllama.sampling.temperature import temp, temp_ext


class Stage(Protocol):
    """One link of the chain: narrows/reshapes candidates, may remember accepted tokens."""

    name: str

    def apply(self, c: Candidates) -> Candidates: ...

    def accept(self, token: int) -> None: ...

    def reset(self) -> None: ...


class TokenConstraint(Protocol):
    """What the sampler needs from a grammar (pyllama.grammar provides one)."""

    def allows(self, token: int) -> bool: ...

    def allowed_mask(self) -> npt.NDArray[np.bool_]: ...

    def accept(self, token: int) -> None: ...

    def reset(self) -> None: ...


class _Step:
    """A stateless sampler function as a chain stage."""

    def __init__(self, name: str, fn: Callable[[Candidates], Candidates]) -> None:
        self.name = name
        self._fn = fn

    def apply(self, c: Candidates) -> Candidates:
        return self._fn(c)

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        pass


class _Xtc:
    name = "xtc"

    def __init__(self, probability: float, threshold: float, min_keep: int, seed: int) -> None:
        self.probability, self.threshold, self.min_keep, self.seed = probability, threshold, min_keep, seed
        self.rng = MT19937(seed)

    def apply(self, c: Candidates) -> Candidates:
        return truncation.xtc(c, self.probability, self.threshold, self.min_keep, self.rng)

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        self.rng.seed(self.seed)


class Sampler:
    """Sampling state for one sequence: call `sample(logits)`, then `accept(token)`."""

    def __init__(
        self,
        params: SamplingParams,
        n_vocab: int,
        *,
        eog_ids: frozenset[int] = frozenset(),
        token_pieces: Sequence[bytes] | None = None,
        n_ctx: int = 4096,
        tokenize: Tokenize | None = None,
        grammar: TokenConstraint | None = None,
        eot_id: int | None = None,
    ) -> None:
        """`token_pieces[i]` is the text (bytes) token i adds to the output; it is needed for
        grammars, DRY sequence breakers and penalize_nl. `tokenize` turns bytes into token ids
        (DRY's multi-token breakers); without it a longest-match over the pieces is used."""
        params.validate()
        self.eot_id = eot_id  # what the infill sampler ends with (EOT, else EOS)
        if n_vocab <= 0:
            raise InvalidRequestError(f"n_vocab must be positive, got {n_vocab}")
        self.params = params
        self.n_vocab = n_vocab
        self.seed = resolve_seed(params.seed)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self.last_candidates: Candidates | None = None
        self.grammar = grammar
        if grammar is None and params.grammar:
            grammar = self.grammar = _build_grammar(params, token_pieces, eog_ids)
        self._stages = self._build_chain(params, n_vocab, eog_ids, token_pieces, n_ctx, tokenize)
        # the reasoning budget runs before everything else, as llama.cpp's rbudget sampler
        self.budget = ReasoningBudget(params.reasoning_budget, token_pieces) if params.reasoning_budget else None

    @property
    def chain_names(self) -> list[str]:
        return [s.name for s in self._stages]

    def _build_chain(
        self,
        params: SamplingParams,
        n_vocab: int,
        eog_ids: frozenset[int],
        pieces: Sequence[bytes] | None,
        n_ctx: int,
        tokenize: Tokenize | None,
    ) -> list[Stage]:
        stages: list[Stage] = []
        biases = list(params.logit_bias)
        if params.ignore_eos:
            biases += [(t, float("-inf")) for t in sorted(eog_ids)]
        if biases:
            stages.append(LogitBias(n_vocab, biases))
        seed = self.seed
        if params.mirostat == 1:
            stages.append(_Step("temp", lambda c: temp(c, params.temperature)))
            stages.append(draw.Mirostat(n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100))
            return stages
        if params.mirostat == 2:
            stages.append(_Step("temp", lambda c: temp(c, params.temperature)))
            stages.append(draw.MirostatV2(seed, params.mirostat_tau, params.mirostat_eta))
            return stages
        min_keep = params.min_keep
        use_adaptive = False
        for name in params.samplers:
            if name == "penalties":
                last_n = n_ctx if params.repeat_last_n == -1 else params.repeat_last_n
                exempt = [] if params.penalize_nl or pieces is None else [i for i, p in enumerate(pieces) if p == b"\n"]
                stages.append(
                    Penalties(
                        n_vocab,
                        last_n,
                        params.repeat_penalty,
                        params.frequency_penalty,
                        params.presence_penalty,
                        exempt=exempt,
                    )
                )
            elif name == "dry":
                stages.append(self._dry(params, pieces, n_ctx, tokenize))
            elif name == "top_k":
                stages.append(_Step("top-k", lambda c: truncation.top_k(c, params.top_k)))
            elif name == "top_p":
                stages.append(_Step("top-p", lambda c: truncation.top_p(c, params.top_p, min_keep)))
            elif name == "min_p":
                stages.append(_Step("min-p", lambda c: truncation.min_p(c, params.min_p, min_keep)))
            elif name == "typ_p":
                stages.append(_Step("typical", lambda c: truncation.typical(c, params.typical_p, min_keep)))
            elif name == "top_n_sigma":
                stages.append(_Step("top-n-sigma", lambda c: truncation.top_n_sigma(c, params.top_n_sigma)))
            elif name == "xtc":
                stages.append(_Xtc(params.xtc_probability, params.xtc_threshold, min_keep, seed))
            elif name == "temperature":
                stages.append(
                    _Step(
                        "temp-ext",
                        lambda c: temp_ext(c, params.temperature, params.dynatemp_range, params.dynatemp_exponent),
                    )
                )
            elif name == "adaptive_p":
                use_adaptive = True
            elif name == "infill":
                if pieces is None:
                    raise InvalidRequestError("the infill sampler needs the vocabulary's token pieces")
                end = self.eot_id if self.eot_id is not None else min(eog_ids, default=0)
                stages.append(_Step("infill", functools.partial(infill, eog_ids=eog_ids, pieces=pieces, end_token=end)))
            else:  # pragma: no cover - validate() rejects unknown names
                raise InvalidRequestError(f"unknown sampler {name!r}")
        if use_adaptive:
            stages.append(draw.AdaptiveP(params.adaptive_target, params.adaptive_decay, seed))
        else:
            stages.append(draw.Dist(seed))
        return stages

    @staticmethod
    def _dry(params: SamplingParams, pieces: Sequence[bytes] | None, n_ctx: int, tokenize: Tokenize | None) -> Dry:
        last_n = n_ctx if params.dry_penalty_last_n == -1 else params.dry_penalty_last_n
        enabled = params.dry_multiplier != 0.0 and params.dry_base >= 1.0 and last_n != 0
        breakers = {}
        if enabled and params.dry_sequence_breakers:
            if pieces is None:
                raise InvalidRequestError("DRY sequence breakers need the vocabulary's token pieces")
            breakers = process_breakers(pieces, params.dry_sequence_breakers, tokenize)
        return Dry(params.dry_multiplier, params.dry_base, params.dry_allowed_length, last_n, breakers)

    def _run_chain(self, c: Candidates) -> Candidates:
        for stage in self._stages:
            c = stage.apply(c)
        return c

    def _check_logits(self, logits: np.ndarray) -> npt.NDArray[np.float32]:
        row = np.asarray(logits)
        if row.ndim != 1 or row.shape[0] != self.n_vocab:
            raise InvalidRequestError(f"expected one row of {self.n_vocab} logits, got shape {row.shape}")
        return row.astype(np.float32, copy=False)

    def sample(self, logits: np.ndarray) -> int:
        """Pick the next token from one row of logits (does not advance any state but RNGs)."""
        row = self._check_logits(logits)
        forcing = False
        if self.budget is not None:
            forcing = self.budget.forced_token() is not None
            row = self.budget.apply(row)  # the end of thinking, forced: one finite logit
        c = self._run_chain(Candidates(self._ids, row.copy()))
        token = c.selected_id()
        if not forcing and self.grammar is not None and not self.grammar.allows(token):
            c = self._run_chain(self._grammar_candidates(row, self.grammar.allowed_mask()))
            token = c.selected_id()
        self.last_candidates = c
        return token

    def _grammar_candidates(self, row: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> Candidates:
        """The full vocabulary with disallowed logits at -inf, as llama.cpp's grammar sampler leaves it.

        When top-k comes first in the chain (after samplers that only shift logits) and at
        least k tokens are allowed, the -inf tokens can never survive it, so only the allowed
        ones are passed on: the same result without partitioning the whole vocabulary.
        """
        allowed = np.flatnonzero(mask)
        logits = row[allowed]
        if not np.isfinite(logits).any():
            raise InvalidRequestError("the grammar allows no token here (is the grammar unsatisfiable?)")
        if self._top_k_first and allowed.size >= self.params.top_k:
            return Candidates(allowed.astype(np.int32), logits.astype(np.float32, copy=True))
        masked = np.full(row.shape, -np.inf, dtype=np.float32)
        masked[allowed] = logits
        return Candidates(self._ids, masked)

    @property
    def _top_k_first(self) -> bool:
        for stage in self._stages:
            if stage.name == "top-k":
                return self.params.top_k > 0
            if stage.name not in ("logit_bias", "penalties", "dry"):
                return False
        return False

    def accept(self, token: int, *, apply_grammar: bool = True) -> None:
        """Advance penalties, DRY, mirostat and the grammar by one token.

        Prompt tokens go through here too with `apply_grammar=False` (llama-server feeds the
        prompt to the penalties; the grammar only sees generated tokens).
        """
        if apply_grammar and self.grammar is not None:
            self.grammar.accept(token)
        if apply_grammar and self.budget is not None:  # generated tokens only (prefill is its own)
            self.budget.accept(token)
        for stage in self._stages:
            stage.accept(token)

    def accept_prompt(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            self.accept(int(t), apply_grammar=False)

    def reset(self) -> None:
        """Forget accepted tokens and restart RNGs from the seed (a fresh generation)."""
        for stage in self._stages:
            stage.reset()
        if self.grammar is not None:
            self.grammar.reset()
        if self.budget is not None:  # back to its state after the generation prompt
            self.budget = ReasoningBudget(self.budget.spec, self.budget.pieces)
        self.last_candidates = None

    def probs(self, logits: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (id, probability) of the plain softmax of `logits`, most likely first."""
        row = self._check_logits(logits)
        n = max(0, min(n, row.size))
        if n == 0:
            return []
        p = _softmax_full(row)
        top = np.argpartition(row, row.size - n)[row.size - n :] if n < row.size else np.arange(row.size)
        top = top[np.lexsort((top, -row[top]))]
        return [(int(i), float(p[i])) for i in top]

    def token_prob(self, logits: np.ndarray, token: int) -> float:
        """Plain-softmax probability of one token (the `prob` of a generated token)."""
        row = self._check_logits(logits)
        return float(_softmax_full(row)[token])

    def post_sampling_probs(self, n: int) -> list[tuple[int, float]]:
        """Top-n (id, probability) of the distribution the last token was drawn from.

        As llama-server: sorted by probability, zero probabilities dropped.
        """
        c = self.last_candidates
        if c is None or c.probs is None or n <= 0:
            return []
        order = np.argsort(-c.probs, kind="stable")[:n]
        return [(int(c.ids[i]), float(c.probs[i])) for i in order if c.probs[i] > 0]

    def last_token_post_prob(self) -> float:
        """Probability of the last sampled token in the post-sampling distribution."""
        c = self.last_candidates
        if c is None or c.probs is None or c.selected < 0:
            return 0.0
        return float(c.probs[c.selected])


def _softmax_full(row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(row - row.max(), dtype=np.float32)
    out: npt.NDArray[np.float32] = (p / p.sum(dtype=np.float64)).astype(np.float32)
    return out


def _build_grammar(
    params: SamplingParams, pieces: Sequence[bytes] | None, eog_ids: frozenset[int]
) -> TokenConstraint:
    if pieces is None:
        raise InvalidRequestError("a grammar needs the vocabulary's token pieces")
    from pyllama.grammar.constraint import GrammarConstraint

    return GrammarConstraint.from_text(
        params.grammar,
        pieces,
        eog_ids,
        lazy=params.grammar_lazy,
        trigger_words=params.grammar_trigger_words,
        trigger_tokens=params.grammar_trigger_tokens,
        trigger_patterns=params.grammar_trigger_patterns,
    )
