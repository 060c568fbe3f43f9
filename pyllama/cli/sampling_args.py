"""llama-cli's sampling flags, shared by `pyllama run` and `pyllama chat`."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pyllama.sampling import SamplingParams, parse_samplers


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    d = SamplingParams()
    g = p.add_argument_group("sampling (llama-cli names and defaults)")
    g.add_argument("--temp", type=float, default=d.temperature, help=f"temperature (default {d.temperature}; <= 0 greedy)")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"top-k (default {d.top_k}, 0 = off)")
    g.add_argument("--top-p", type=float, default=d.top_p, help=f"top-p (default {d.top_p}, 1.0 = off)")
    g.add_argument("--min-p", type=float, default=d.min_p, help=f"min-p (default {d.min_p}, 0.0 = off)")
    g.add_argument("--typical", type=float, default=d.typical_p, help="locally typical sampling p (1.0 = off)")
    g.add_argument("--top-nsigma", type=float, default=d.top_n_sigma, help="top-n-sigma (-1 = off)")
    g.add_argument("--xtc-probability", type=float, default=d.xtc_probability)
    g.add_argument("--xtc-threshold", type=float, default=d.xtc_threshold)
    g.add_argument("--dynatemp-range", type=float, default=d.dynatemp_range)
    g.add_argument("--dynatemp-exp", type=float, default=d.dynatemp_exponent)
    g.add_argument("--repeat-last-n", type=int, default=d.repeat_last_n, help="tokens considered for penalties (-1 = ctx)")
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty)
    g.add_argument("--presence-penalty", type=float, default=d.presence_penalty)
    g.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty)
    g.add_argument("--dry-multiplier", type=float, default=d.dry_multiplier)
    g.add_argument("--dry-base", type=float, default=d.dry_base)
    g.add_argument("--dry-allowed-length", type=int, default=d.dry_allowed_length)
    g.add_argument("--dry-penalty-last-n", type=int, default=d.dry_penalty_last_n)
    g.add_argument("--dry-sequence-breaker", action="append", default=None, help="repeatable")
    g.add_argument("--mirostat", type=int, default=d.mirostat, help="0 off, 1 v1, 2 v2")
    g.add_argument("--mirostat-lr", type=float, default=d.mirostat_eta, help="mirostat eta")
    g.add_argument("--mirostat-ent", type=float, default=d.mirostat_tau, help="mirostat tau")
    g.add_argument("--min-keep", type=int, default=d.min_keep)
    g.add_argument("-s", "--seed", type=int, default=d.seed, help="RNG seed (-1 = random)")
    g.add_argument("--ignore-eos", action="store_true", help="keep generating after end-of-generation tokens")
    g.add_argument("-l", "--logit-bias", action="append", default=[], metavar="ID(+/-)BIAS",
                   help="e.g. 15043+1 or 15043-inf (repeatable)")
    g.add_argument("--samplers", default=None, help="sampler order, ';'-separated names")
    g.add_argument("--sampling-seq", default=None, help="sampler order as letters, e.g. edkypmxt")
    g.add_argument("--grammar", default="", help="GBNF grammar constraining the output")
    g.add_argument("--grammar-file", default=None, help="file with a GBNF grammar")
    g.add_argument("-j", "--json-schema", default=None, help="JSON schema constraining the output")


def _parse_bias(item: str) -> tuple[int, float]:
    m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(inf|[0-9.]+(?:[eE][+-]?\d+)?)\s*", item)
    if m is None:
        raise ValueError(f"--logit-bias {item!r}: expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043-inf")
    value = float("inf") if m[3] == "inf" else float(m[3])
    return int(m[1]), -value if m[2] == "-" else value


def params_from_args(a: argparse.Namespace) -> SamplingParams:
    p = SamplingParams(
        temperature=a.temp, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p, typical_p=a.typical,
        top_n_sigma=a.top_nsigma, xtc_probability=a.xtc_probability, xtc_threshold=a.xtc_threshold,
        dynatemp_range=a.dynatemp_range, dynatemp_exponent=a.dynatemp_exp,
        repeat_last_n=a.repeat_last_n, repeat_penalty=a.repeat_penalty,
        presence_penalty=a.presence_penalty, frequency_penalty=a.frequency_penalty,
        dry_multiplier=a.dry_multiplier, dry_base=a.dry_base, dry_allowed_length=a.dry_allowed_length,
        dry_penalty_last_n=a.dry_penalty_last_n, mirostat=a.mirostat, mirostat_eta=a.mirostat_lr,
        mirostat_tau=a.mirostat_ent, min_keep=a.min_keep, seed=a.seed, ignore_eos=a.ignore_eos,
        logit_bias=[_parse_bias(x) for x in a.logit_bias],
    )
    if a.dry_sequence_breaker is not None:
        p.dry_sequence_breakers = list(a.dry_sequence_breaker)
    if a.samplers:
        p.samplers = parse_samplers(a.samplers.replace(";", ",").split(","))
    elif a.sampling_seq:
        p.samplers = parse_samplers(a.sampling_seq)
    grammar = a.grammar
    if a.grammar_file:
        grammar = Path(a.grammar_file).read_text()
    if a.json_schema:
        from pyllama.grammar import json_schema_to_grammar

        grammar = json_schema_to_grammar(json.loads(a.json_schema))
    p.grammar = grammar
    p.validate()
    return p
