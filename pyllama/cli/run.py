"""`pyllama run`: complete a prompt, streaming only the generated text to stdout (llama-cli -no-cnv)."""

from __future__ import annotations

import argparse
import sys
import time

from pyllama.cli.common import (
    CliError,
    add_model_args,
    add_thread_args,
    blas_threads,
    guarded,
    load_model,
    log,
)
from pyllama.cli.cvec_args import add_cvec_args, apply_cvec_args
from pyllama.cli.kv_args import add_kv_args
from pyllama.cli.lora_args import add_lora_args, apply_lora_args
from pyllama.cli.sampling_args import add_sampling_args, params_from_args
from pyllama.cli.spec_args import add_spec_args, speculative_settings
from pyllama.scheduler import Scheduler
from pyllama.tasks import Event, Final, Partial, Task


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="generate text from a prompt", description=__doc__)
    add_model_args(p)
    add_thread_args(p)
    add_spec_args(p)
    add_lora_args(p)
    add_cvec_args(p)
    add_kv_args(p)
    p.add_argument("-p", "--prompt", default="", help="prompt text")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    p.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens to generate (-1 = until end/ctx)")
    p.add_argument("--no-parse-special", action="store_true", help="treat special-token text as plain text")
    p.add_argument("--verbose-prompt", action="store_true", help="print the prompt tokens to stderr")
    add_sampling_args(p)
    p.set_defaults(func=guarded(main))


def main(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    spec, unsupported = speculative_settings(vars(args))
    for name in unsupported:
        log(f"note: --spec-type {name} is not implemented in pyllama: ignored")
    threads = blas_threads(args)
    model = load_model(args, kv_overrides=args.override_kv)
    apply_lora_args(model, args.lora)
    apply_cvec_args(model, args.control_vector, args.control_vector_layer_range)
    draft = None
    if args.model_draft:  # -md: same context as the target, one sequence
        from pyllama.engine import Model

        draft = Model.load(args.model_draft, n_ctx=model.n_ctx, weights=args.weights, numerics=args.numerics,
                           kv_overrides=args.override_kv)
    tok = model.tokenizer
    text = args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    prompt = tok.tokenize(text, add_special=True, parse_special=not args.no_parse_special)
    if args.verbose_prompt:
        log(f"prompt tokens ({len(prompt)}): {prompt}")
    if not prompt:
        raise CliError("the prompt is empty")
    # The server's scheduler, one slot: the same batching, stop handling and speculative
    # decoding as pyllama-server and the browser session.
    sched = Scheduler(model, threads=threads, context_shift=False, speculative=spec, draft_model=draft)
    finals: list[Final] = []

    def emit(event: Event) -> None:
        if isinstance(event, Partial):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        else:
            finals.append(event)

    t0 = time.perf_counter()
    sched.submit(Task(prompt, params=params, n_predict=args.n_predict, cache_prompt=False), emit)
    while not finals:
        sched.step()
    final = finals[0]
    if final.error is not None:
        raise CliError(final.error)
    sys.stdout.write(final.tail)
    sys.stdout.write("\n")
    sys.stdout.flush()
    t1 = time.perf_counter()
    pp, tg, n = final.prompt_ms / 1e3, final.predicted_ms / 1e3, final.n_decoded
    log(
        f"prompt: {len(prompt)} tokens in {pp * 1e3:.0f} ms ({len(prompt) / max(pp, 1e-9):.1f} tok/s); "
        f"generated: {n} tokens, {n / max(tg, 1e-9):.1f} tok/s; seed {final.seed}; weights {model.weights}; "
        f"total {t1 - t0:.2f} s"
        + (f"; draft {final.draft_n_accepted}/{final.draft_n} accepted" if final.draft_n else "")
    )
    return 0
