"""Regenerate `unicode_tables.py` from llama.cpp's `src/unicode-data.cpp`.

Why copy llama.cpp's tables instead of asking `unicodedata`? Bit-for-bit tokenization
needs the *same* category of every code point as llama.cpp, and CPython 3.11
(Unicode 14), Pyodide's CPython 3.12 (Unicode 15.0) and llama.cpp (whatever
UnicodeData.txt was "latest" when its table was generated) all disagree on recently
assigned characters. A committed table makes every runtime agree with llama.cpp.

Usage: python -m pyllama.tokenizer.gen_unicode_tables path/to/unicode-data.cpp > /tmp/t.py
(then move /tmp/t.py over unicode_tables.py: the package imports the old one while this runs).
"""

from __future__ import annotations

import re
import sys

_BLOCK = re.compile(r"const std::[a-z_<>:, 0-9]+ (\w+) = \{[^\n]*\n(.*?)\n\};", re.S)


def parse(source: str) -> dict[str, list[tuple[int, ...]]]:
    """Every table of unicode-data.cpp as a list of integer tuples."""
    tables: dict[str, list[tuple[int, ...]]] = {}
    for name, body in _BLOCK.findall(source):
        rows: list[tuple[int, ...]] = []
        for line in body.splitlines():
            nums = re.findall(r"0x[0-9A-Fa-f]+", line)
            if nums:
                rows.append(tuple(int(n, 16) for n in nums))
        tables[name] = rows
    return tables


def _flat(rows: list[tuple[int, ...]], per_line: int) -> str:
    nums = [f"0x{n:X}" for row in rows for n in row]
    lines = [", ".join(nums[i : i + per_line]) + "," for i in range(0, len(nums), per_line)]
    return "\n".join("    " + line for line in lines)


def render(tables: dict[str, list[tuple[int, ...]]]) -> str:
    flags = tables["unicode_ranges_flags"]
    ws = tables["unicode_set_whitespace"]
    lower = tables["unicode_map_lowercase"]
    nfd = tables["unicode_ranges_nfd"]
    return f'''"""Unicode tables copied from llama.cpp's src/unicode-data.cpp (generated file; do not edit).

Regenerate with `python -m pyllama.tokenizer.gen_unicode_tables unicode-data.cpp`.
See docs/tokenizers.md for the Unicode version these tables describe.
"""

# fmt: off
# (start, flags) pairs, flattened; a range lasts until the next start. Flags as in
# llama.cpp's unicode.h: 1 undefined, 2 number, 4 letter, 8 separator, 16 mark,
# 32 punctuation, 64 symbol, 128 control.
FLAG_RANGES: tuple[int, ...] = (
{_flat(flags, 12)}
)

WHITESPACE: tuple[int, ...] = (
{_flat(ws, 12)}
)

# (codepoint, lowercase) pairs, flattened, ascending.
LOWERCASE: tuple[int, ...] = (
{_flat(lower, 12)}
)

# (first, last, nfd first codepoint) triples, flattened, ascending.
NFD_RANGES: tuple[int, ...] = (
{_flat(nfd, 12)}
)
# fmt: on
'''


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(parse(f.read())))


if __name__ == "__main__":
    main()
