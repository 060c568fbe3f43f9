"""`--override-kv KEY=TYPE:VALUE,...` for `pyllama run`, with llama-cli's syntax and messages
(pyllama/kv_override.py); repeatable, each a comma-separated list."""

from __future__ import annotations

import argparse
from typing import Any

from pyllama.errors import InvalidRequestError
from pyllama.kv_override import KVOverride, parse_kv_overrides


class _KVAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items: list[KVOverride] = list(getattr(namespace, self.dest, None) or [])
        try:
            items += parse_kv_overrides(str(values))
        except InvalidRequestError as exc:
            parser.error(f"--override-kv: {exc}")
        setattr(namespace, self.dest, items)


def add_kv_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--override-kv", dest="override_kv", action=_KVAction, metavar="KEY=TYPE:VALUE,...", default=[],
                   help="advanced option to override model metadata by key (comma-separated; types: int, float, "
                        "bool, str). example: --override-kv tokenizer.ggml.add_bos_token=bool:false")
