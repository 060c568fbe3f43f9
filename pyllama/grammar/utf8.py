"""UTF-8 decoding that tolerates a character split across tokens (llama.cpp's decode_utf8).

Byte-level BPE vocabularies have tokens that end in the middle of a multi-byte
character. The grammar works on code points, so it carries the unfinished bytes
(`Partial`) into the next token and, while filtering, asks whether an unfinished
character could still complete to something the grammar allows.
"""

from __future__ import annotations

from typing import NamedTuple

_LEAD = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)  # sequence length by the high nibble


class Partial(NamedTuple):
    value: int = 0  # bits decoded so far
    n_remain: int = 0  # continuation bytes still expected; -1 = invalid sequence


NO_PARTIAL = Partial()


def decode_utf8(data: bytes, start: Partial = NO_PARTIAL) -> tuple[list[int], Partial]:
    """Code points of `data` after `start`, and what is left unfinished at its end.

    Exactly llama.cpp's rules, including its quirks: decoding stops at a NUL byte, an
    invalid lead byte yields ([], Partial(0, -1)) and continuation bytes of a started
    sequence are not checked.
    """
    nul = data.find(0)
    if nul >= 0:
        data = data[:nul]
    out: list[int] = []
    pos = 0
    n = len(data)
    value, n_remain = start
    while pos < n and n_remain > 0:
        b = data[pos]
        if b >> 6 != 2:
            return [], Partial(0, -1)
        value = (value << 6) + (b & 0x3F)
        pos += 1
        n_remain -= 1
    if start.n_remain > 0 and n_remain == 0:
        out.append(value)
    while pos < n:
        first = data[pos]
        n_remain = _LEAD[first >> 4] - 1
        if n_remain < 0:
            return [], Partial(0, n_remain)
        value = first & ((1 << (7 - n_remain)) - 1)
        pos += 1
        while pos < n and n_remain > 0:
            value = (value << 6) + (data[pos] & 0x3F)
            pos += 1
            n_remain -= 1
        if n_remain == 0:
            out.append(value)
    return out, Partial(value, n_remain)


def partial_range(partial: Partial) -> tuple[int, int] | None:
    """The code points a partial sequence could still complete to, or None if none."""
    value, n_remain = partial
    if n_remain < 0 or (n_remain == 1 and value < 2):
        return None  # invalid, or a 7-bit char spread over 2 bytes (overlong)
    low = value << (n_remain * 6)
    high = low | ((1 << (n_remain * 6)) - 1)
    if low == 0:
        if n_remain == 2:
            low = 1 << 11
        elif n_remain == 3:
            low = 1 << 16
    return low, high
