"""Sampling: llama.cpp's sampler chain over one row of logits.

`SamplingParams` carries a request's settings (llama-server names and defaults);
`Sampler` is the per-sequence chain built from them; `parse_samplers` reads the
`samplers` request field (names or `--sampling-seq` letters).
"""

from pyllama.sampling.candidates import Candidates
from pyllama.sampling.params import (
    DEFAULT_SAMPLERS,
    SAMPLER_LETTERS,
    SamplingParams,
    parse_samplers,
    samplers_to_letters,
)
from pyllama.sampling.rng import DEFAULT_SEED
from pyllama.sampling.sampler import Sampler, TokenConstraint

__all__ = [
    "DEFAULT_SAMPLERS",
    "DEFAULT_SEED",
    "SAMPLER_LETTERS",
    "Candidates",
    "Sampler",
    "SamplingParams",
    "TokenConstraint",
    "parse_samplers",
    "samplers_to_letters",
]
