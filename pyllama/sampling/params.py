"""Sampling parameters as llama-server's /completion accepts them, and sampler names.

Field names and defaults follow llama-server's request fields (`temperature`, not
llama.cpp's internal `temp`), so the server can build a `SamplingParams` straight from a
request body. `samplers` holds canonical names (llama.cpp's `common_sampler_type_to_str`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyllama.errors import InvalidRequestError
from pyllama.sampling.reasoning_budget import BudgetSpec

# llama.cpp common.h: the default sampler order (`--sampling-seq edskypmxt`).
DEFAULT_SAMPLERS: tuple[str, ...] = (
    "penalties",
    "dry",
    "top_n_sigma",
    "top_k",
    "typ_p",
    "top_p",
    "min_p",
    "xtc",
    "temperature",
)

# canonical name -> `--sampling-seq` letter (common_sampler_type_to_chr)
SAMPLER_LETTERS: dict[str, str] = {
    "dry": "d",
    "top_k": "k",
    "typ_p": "y",
    "top_p": "p",
    "top_n_sigma": "s",
    "min_p": "m",
    "temperature": "t",
    "xtc": "x",
    "infill": "i",
    "penalties": "e",
    "adaptive_p": "a",
}

# Names that older llama-server versions documented and that llama.cpp has since removed
# (tail-free sampling). Accepted and ignored so old clients do not get a 400.
_REMOVED_NAMES = frozenset({"tfs_z", "tfs-z", "tfsz", "tfs"})
_REMOVED_LETTERS = frozenset({"f"})


def _build_aliases() -> dict[str, str]:
    """llama.cpp's `common_sampler_types_from_names` aliases, plus a few older spellings."""
    aliases: dict[str, str] = {}
    for canonical in SAMPLER_LETTERS:
        aliases[canonical] = canonical
        if "_" in canonical:
            aliases[canonical.replace("_", "-")] = canonical
            aliases[canonical.replace("_", "")] = canonical
    aliases.update(
        {
            "nucleus": "top_p",
            "temp": "temperature",
            "typ": "typ_p",
            # older llama-server docs list these names
            "typical_p": "typ_p",
            "typical": "typ_p",
            "typical-p": "typ_p",
        }
    )
    return aliases


_ALIASES = _build_aliases()
_FROM_LETTER = {letter: name for name, letter in SAMPLER_LETTERS.items()}


def parse_samplers(value: str | list[str]) -> list[str]:
    """Sampler order from a request: a list of names or a string of `--sampling-seq` letters.

    A list may also be a single `;`-separated string as `--samplers` takes it; a string
    without `;` that is not a name is read as letters. Unknown names raise
    InvalidRequestError (llama.cpp only logs a warning; a 400 tells the client why its
    sampler did not run).
    """
    if isinstance(value, str):
        text = value.strip()
        if ";" in text or text.lower() in _ALIASES or text.lower() in _REMOVED_NAMES:
            return parse_samplers([part for part in text.split(";") if part.strip()])
        out: list[str] = []
        for letter in text:
            if letter in _FROM_LETTER:
                out.append(_FROM_LETTER[letter])
            elif letter not in _REMOVED_LETTERS:
                known = "".join(_FROM_LETTER)
                raise InvalidRequestError(f"unknown sampler letter {letter!r} in {value!r} (known letters: {known})")
        return out
    if not isinstance(value, list):
        raise InvalidRequestError(f"samplers must be a list of names or a string of letters, got {type(value).__name__}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequestError(f"sampler names must be strings, got {item!r}")
        key = item.strip().lower()
        if key in _REMOVED_NAMES:
            continue
        if key not in _ALIASES:
            known = ", ".join(SAMPLER_LETTERS)
            raise InvalidRequestError(f"unknown sampler {item!r} (known samplers: {known})")
        names.append(_ALIASES[key])
    return names


def samplers_to_letters(names: list[str]) -> str:
    """The `--sampling-seq` string for a canonical sampler list."""
    return "".join(SAMPLER_LETTERS[name] for name in names)


@dataclass
class SamplingParams:
    """One request's sampling settings (llama-server field names and defaults).

    The defaults are pyllama.sampling.fields' table (tests/sampling/test_fields.py checks
    they agree); they are repeated here so this class reads on its own.
    """

    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    top_n_sigma: float = -1.0
    repeat_last_n: int = 64  # -1 = context size
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 64  # -1 = context size
    dry_sequence_breakers: list[str] = field(default_factory=lambda: ["\n", ":", '"', "*"])
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    adaptive_target: float = -1.0  # adaptive-p sampler (only when "adaptive_p" is in samplers)
    adaptive_decay: float = 0.9
    min_keep: int = 0
    n_probs: int = 0
    post_sampling_probs: bool = False
    seed: int = -1  # -1 (= 0xFFFFFFFF, LLAMA_DEFAULT_SEED) draws a random seed
    ignore_eos: bool = False
    # (token id, bias); bias -inf bans the token (`false` in a request)
    logit_bias: list[tuple[int, float]] = field(default_factory=list)
    samplers: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLERS))
    grammar: str = ""
    grammar_lazy: bool = False
    # lazy grammars start constraining once one of these words appears in the output
    grammar_trigger_words: list[str] = field(default_factory=list)
    grammar_trigger_tokens: list[int] = field(default_factory=list)
    # regexes (llama.cpp "pattern" triggers); constrained output starts at the first group
    grammar_trigger_patterns: list[str] = field(default_factory=list)
    penalize_nl: bool = True  # older llama-server field; False exempts "\n" from penalties
    # the reasoning budget (--reasoning-budget N, reasoning_budget_tokens): None = no budget
    reasoning_budget: BudgetSpec | None = None
    # the block may be ended while generating (reasoning_control, POST /v1/chat/completions/control)
    reasoning_control: bool = False

    def validate(self) -> None:
        """Reject values llama.cpp refuses (common_sampler_init) with one clear line."""
        import math

        if not math.isfinite(self.repeat_penalty) or self.repeat_penalty <= 0.0:
            raise InvalidRequestError("repeat_penalty must be finite and greater than 0")
        if not math.isfinite(self.frequency_penalty):
            raise InvalidRequestError("frequency_penalty must be finite")
        if not math.isfinite(self.presence_penalty):
            raise InvalidRequestError("presence_penalty must be finite")
        if self.mirostat not in (0, 1, 2):
            raise InvalidRequestError(f"mirostat must be 0, 1 or 2, got {self.mirostat}")
        if self.repeat_last_n < -1:
            raise InvalidRequestError(f"repeat_last_n must be >= -1, got {self.repeat_last_n}")
        if self.dry_penalty_last_n < -1:
            raise InvalidRequestError(f"dry_penalty_last_n must be >= -1, got {self.dry_penalty_last_n}")
        if self.min_keep < 0:
            raise InvalidRequestError(f"min_keep must be >= 0, got {self.min_keep}")
        for name in self.samplers:
            if name not in SAMPLER_LETTERS:
                raise InvalidRequestError(f"unknown sampler {name!r}")
