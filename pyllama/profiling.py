"""Where a forward pass spends its time, by op category and by layer (`pyllama bench --profile`).

The engine is not instrumented: a `sys.setprofile` hook watches Python calls and charges
the time between two events to the category of the innermost categorised function on the
stack. NumPy's C functions are not categorised themselves, so `np.matmul` inside the
attention code counts as attention and inside `Linear` as matmul. Categories come from
name patterns over `module.qualname` (not a list of functions), so the breakdown keeps
working while the hot path is rewritten; a function nothing matches inherits its caller's
category, and code outside every category is "other". The output head, sampling and
the embedding lookup are "sticky": everything they call counts as theirs (the head's
matvec is the head, not matmul).

The hook's own cost is excluded from the totals (the clock restarts after it runs), but it
still slows Python-heavy code a little; shares are the thing to read, and the CLI scales
them to the unprofiled wall time. Works under Pyodide (pure Python, no threads).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyllama.engine import Model

CATEGORIES: tuple[str, ...] = (
    "matmul", "attention", "norm", "rope", "activation", "embedding", "output head", "sampling", "other",
)
STICKY = frozenset({"output head", "sampling", "embedding"})

# First match wins; patterns see "module.qualname" in lower case.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("sampling", re.compile(r"^pyllama\.(sampling|grammar)\b|\bsampl")),
    ("output head", re.compile(r"\.(head|lm_head|output_head|logits?)$")),
    ("rope", re.compile(r"rope|rotar|rotate|sincos|yarn")),
    ("norm", re.compile(r"norm")),
    ("attention", re.compile(r"attn|attend|attention|flash|softmax|kv_cache|kvcache|causal_mask")),
    ("activation", re.compile(r"silu|gelu|swiglu|geglu|relu|activation|softcap|tanh")),
    ("embedding", re.compile(r"embed|get_rows|token_rows")),
    ("matmul", re.compile(r"^pyllama\.(linear|exact_matmul|quant)\b|linear|matmul|matvec|gemm|dequant|act_quant")),
)


def classify(module: str, qualname: str) -> str | None:
    """The category of a Python function, or None when it should inherit its caller's."""
    key = f"{module}.{qualname}".lower()
    for name, pattern in RULES:
        if pattern.search(key):
            return name
    return None


@dataclass
class Profile:
    """Seconds per category, and per layer: time spent inside `block(layer, ...)` calls (any
    method named `block` with an int `layer` argument)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    layer_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def shares(self) -> dict[str, float]:
        """Percent of the profiled time per category (sums to 100 when anything ran)."""
        total = self.total
        return {k: (100.0 * v / total if total > 0 else 0.0) for k, v in self.seconds.items()}


class OpProfiler:
    """`with OpProfiler() as p: model.decode(...)`, then read `p.profile`."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        # `clock`: wall time by default; tests pass time.thread_time so other processes on a
        # loaded machine do not change the shares they check.
        self._clock = clock
        self.profile = Profile()
        # per active Python frame: (category, sticky, layer of the enclosing block() or -1)
        self._stack: list[tuple[str, bool, int]] = []
        self._codes: dict[CodeType, str | None] = {}
        self._last = 0.0
        self._prev: Any = None

    def _category(self, frame: FrameType) -> str | None:
        code = frame.f_code
        try:
            return self._codes[code]
        except KeyError:
            module = str(frame.f_globals.get("__name__", ""))
            cat = self._codes[code] = classify(module, getattr(code, "co_qualname", code.co_name))
            return cat

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        now = self._clock()
        stack = self._stack
        name, sticky, layer = stack[-1] if stack else ("other", False, -1)
        delta = now - self._last
        self.profile.seconds[name] += delta
        if layer >= 0:
            layers = self.profile.layer_seconds
            layers[layer] = layers.get(layer, 0.0) + delta
        if event == "call":
            cat = self._category(frame)
            if not sticky and cat is not None:
                name, sticky = cat, cat in STICKY
            if frame.f_code.co_name == "block":
                value = frame.f_locals.get("layer")
                if isinstance(value, int):
                    layer = value
            stack.append((name, sticky, layer))
        elif event == "return" and stack:
            stack.pop()
        self._last = self._clock()

    def __enter__(self) -> OpProfiler:
        self._prev = sys.getprofile()
        self._last = self._clock()
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._prev)


def profile_call(fn: Callable[[], Any]) -> Profile:
    """Run `fn()` once under the profiler."""
    with OpProfiler() as p:
        fn()
    return p.profile


def profile_model(model: Model, n_prompt: int, n_gen: int) -> dict[str, Any]:
    """Profile one prompt pass of n_prompt tokens and n_gen decode steps with the default
    sampler chain, after a warm-up of both; per-category time is the profiled share of the
    unprofiled wall time of the same work."""
    import numpy as np

    from pyllama.sampling import Sampler, SamplingParams

    tokens = [int(t) for t in np.random.default_rng(0).integers(0, model.n_vocab, n_prompt)]

    def prompt() -> None:
        model.kv.clear(0)
        model.eval_prompt(tokens, 0, 0)

    def decode() -> None:
        sampler = Sampler(SamplingParams(seed=0), model.n_vocab)
        token = tokens[-1]
        for _ in range(n_gen):
            logits = model.eval_prompt([token], 0)
            token = sampler.sample(logits)
            sampler.accept(token)

    prompt()  # warm-up: lazily built tables and buffers are not part of a step
    model.eval_prompt([tokens[-1]], 0)
    out: dict[str, Any] = {}
    for name, fn, n in (("pp", prompt, n_prompt), ("tg", decode, n_gen)):
        if name == "tg":
            model.kv.clear(0)
            model.eval_prompt(tokens, 0, 0)
            length = model.kv.length(0)
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        if name == "tg":
            model.kv.truncate(0, length)
        with OpProfiler() as p:
            fn()
        out[name] = profile_summary(p.profile, wall, n)
    return out


def profile_summary(p: Profile, wall: float, n_tokens: int) -> dict[str, Any]:
    shares = p.shares()
    ms_tok = 1000 * wall / max(1, n_tokens)
    layers = [p.layer_seconds[k] for k in sorted(p.layer_seconds)]
    layer_scale = (1000 * wall / p.total / max(1, n_tokens)) if p.total > 0 else 0.0
    return {
        "n_tokens": n_tokens, "ms_per_token": ms_tok,
        "categories": {c: {"ms_per_token": ms_tok * shares[c] / 100, "percent": shares[c]} for c in CATEGORIES},
        "layers_ms_per_token": [s * layer_scale for s in layers],
    }
