"""llama-cli's sampling flags, shared by `pyllama run` and `pyllama chat`.

The flags are pyllama.sampling.fields' table (the same names pyllama-server takes), so
this module only adds the grammar flags, which constrain output rather than sample it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyllama.sampling import SamplingParams
from pyllama.sampling.fields import FIELDS, SEQ_FLAGS, SEQ_HELP, flag_values

_TYPES = {"int": int, "seed": int, "float": float}


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (llama-cli names and defaults)")
    for f in FIELDS:
        if not f.flags:
            continue
        if f.kind == "bool":
            g.add_argument(*f.flags, dest=f.name, action="store_true", help=f.help)
        elif f.kind in _TYPES:
            g.add_argument(*f.flags, dest=f.name, type=_TYPES[f.kind], default=f.default, metavar="N",
                           help=f.flag_help)
        elif f.kind == "samplers":
            g.add_argument(*f.flags, dest=f.name, default=None, metavar="SAMPLERS", help=f.flag_help)
        else:  # repeatable: dry_sequence_breakers, logit_bias
            metavar = "TOKEN_ID(+/-)BIAS" if f.kind == "logit_bias" else "STRING"
            g.add_argument(*f.flags, dest=f.name, action="append", default=None, metavar=metavar, help=f.flag_help)
    g.add_argument(*SEQ_FLAGS, dest="sampling_seq", default=None, metavar="SEQUENCE", help=SEQ_HELP)
    g.add_argument("--grammar", default="", help="GBNF grammar constraining the output")
    g.add_argument("--grammar-file", default=None, help="file with a GBNF grammar")
    g.add_argument("-j", "--json-schema", default=None, help="JSON schema constraining the output")


def params_from_args(a: argparse.Namespace) -> SamplingParams:
    """SamplingParams from the parsed flags (ValueError or InvalidRequestError on a bad value)."""
    p = SamplingParams()
    for name, value in flag_values(vars(a)).items():
        setattr(p, name, [tuple(pair) for pair in value] if name == "logit_bias" else value)
    grammar = a.grammar
    if a.grammar_file:
        grammar = Path(a.grammar_file).read_text()
    if a.json_schema:
        from pyllama.grammar import json_schema_to_grammar

        grammar = json_schema_to_grammar(json.loads(a.json_schema))
    p.grammar = grammar
    p.validate()
    return p
