"""llama-server's flags that print something and exit: `--list-devices`, `-cl/--cache-list`,
`--completion-bash` (common/arg.cpp). Each answers as llama-server does, exit status 0, so a
script that asks llama-server these questions gets the same shape of answer here:

- `--list-devices`: llama.cpp lists every non-CPU device; pyllama has none, so the list is
  llama.cpp's own answer on a CPU-only build, "Available devices:" then "  (none)".
- `-cl/--cache-list`: the models of llama.cpp's download cache (`LLAMA_CACHE`, or the Hugging
  Face hub layout) as `org/repo:TAG`, numbered, the list `-hf` serves from (asgi/hf_cache.py).
- `--completion-bash`: a bash completion script in llama.cpp's shape, for this server's own
  flags (every spelling of asgi/flags.py's table), bound to `pyllama-server`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_FLAGS: list[tuple[str, ...]] = [
    ("--list-devices", "list_devices", "exit", "print list of available devices and exit (pyllama: none but the CPU)"),
    ("-cl --cache-list", "cache_list", "exit", "show list of models in cache (llama.cpp's download cache: LLAMA_CACHE or the HF hub's) and exit"),
    ("--completion-bash", "completion_bash", "exit", "print source-able bash completion script for pyllama-server and exit"),
]


def list_devices() -> str:
    return "Available devices:\n  (none)\n"


def cache_list() -> str:
    from asgi.hf_cache import list_cached_models

    models = list_cached_models()
    return f"number of models in cache: {len(models)}\n" + "".join(f"{i:4d}. {m}\n" for i, m in enumerate(models, 1))


def completion_bash(names: Sequence[str]) -> str:
    """common_params_print_completion's script, with `names` as the options."""
    return (
        "_llama_completions() {\n"
        "    local cur prev opts\n"
        "    COMPREPLY=()\n"
        '    cur="${COMP_WORDS[COMP_CWORD]}"\n'
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"\n\n'
        f'    opts="{" ".join(names)} "\n\n'
        '    case "$prev" in\n'
        "        --model|-m)\n"
        "            COMPREPLY=( $(compgen -f -X '!*.gguf' -- \"$cur\") $(compgen -d -- \"$cur\") )\n"
        "            return 0\n"
        "            ;;\n"
        "        --grammar-file)\n"
        "            COMPREPLY=( $(compgen -f -X '!*.gbnf' -- \"$cur\") $(compgen -d -- \"$cur\") )\n"
        "            return 0\n"
        "            ;;\n"
        "        --chat-template-file)\n"
        "            COMPREPLY=( $(compgen -f -X '!*.jinja' -- \"$cur\") $(compgen -d -- \"$cur\") )\n"
        "            return 0\n"
        "            ;;\n"
        "        *)\n"
        '            COMPREPLY=( $(compgen -W "${opts}" -- "$cur") )\n'
        "            return 0\n"
        "            ;;\n"
        "    esac\n"
        "}\n\n"
        "complete -F _llama_completions pyllama-server\n"
    )


class PrintAndExit(argparse.Action):
    """An argparse action that writes `text()` to stdout and exits 0 when its flag is parsed
    (llama.cpp's handlers call exit(0) as they parse, before any model is loaded)."""

    def __init__(self, option_strings: Sequence[str], dest: str, text: Callable[[], str], **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kw)
        self.text = text

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stdout.write(self.text())
        sys.stdout.flush()
        parser.exit(0)
