"""`pyllama run`: complete a prompt, streaming only the generated text to stdout (llama-cli -no-cnv)."""

from __future__ import annotations

import argparse
import sys
import time

from pyllama.cli.common import add_model_args, guarded, load_model, log
from pyllama.cli.sampling_args import add_sampling_args, params_from_args
from pyllama.sampling import Sampler


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="generate text from a prompt", description=__doc__)
    add_model_args(p)
    p.add_argument("-p", "--prompt", default="", help="prompt text")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    p.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens to generate (-1 = until end/ctx)")
    p.add_argument("--no-parse-special", action="store_true", help="treat special-token text as plain text")
    p.add_argument("--verbose-prompt", action="store_true", help="print the prompt tokens to stderr")
    add_sampling_args(p)
    p.set_defaults(func=guarded(main))


def main(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    model = load_model(args)
    tok = model.tokenizer
    text = args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    prompt = tok.tokenize(text, add_special=True, parse_special=not args.no_parse_special)
    if args.verbose_prompt:
        log(f"prompt tokens ({len(prompt)}): {prompt}")
    sampler = Sampler(params, model.n_vocab, eog_ids=tok.eog_ids, n_ctx=model.n_ctx_seq,
                      token_pieces=tok.all_pieces(special=True)
                      if params.grammar or params.dry_multiplier > 0 else None)
    sampler.accept_prompt(prompt)
    from pyllama.tokenizer import IncrementalDecoder

    dec = IncrementalDecoder(tok)
    t0 = time.perf_counter()
    n = 0
    t_first = 0.0
    for token in model.generate(prompt, sampler, args.n_predict, ignore_eos=params.ignore_eos):
        if n == 0:
            t_first = time.perf_counter()
        n += 1
        sys.stdout.write(dec.feed(token))
        sys.stdout.flush()
    sys.stdout.write(dec.flush())
    sys.stdout.write("\n")
    sys.stdout.flush()
    t1 = time.perf_counter()
    pp = t_first - t0 if n else t1 - t0
    tg = (t1 - t_first) / max(1, n - 1)
    log(
        f"prompt: {len(prompt)} tokens in {pp * 1e3:.0f} ms ({len(prompt) / max(pp, 1e-9):.1f} tok/s); "
        f"generated: {n} tokens, {1 / max(tg, 1e-9):.1f} tok/s; seed {sampler.seed}; weights {model.weights}"
    )
    return 0
