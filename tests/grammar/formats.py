"""A jsonschema FormatChecker with RFC 3339 `time` / `date-time` checks.

jsonschema only checks these formats when optional packages are installed (and its
fallback `time` check rejects valid values such as "12:30:00Z"), so tests that validate
grammar output against schemas use this one.
"""

from __future__ import annotations

import re

import jsonschema

_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    date_ok = checker.checkers["date"][0]

    def time_ok(v: object) -> bool:
        return not isinstance(v, str) or bool(_TIME.fullmatch(v))

    def date_time_ok(v: object) -> bool:
        if not isinstance(v, str):
            return True
        day, sep, clock = v.partition("T")
        return bool(sep) and bool(date_ok(day)) and time_ok(clock)

    checker.checks("time")(time_ok)
    checker.checks("date-time")(date_time_ok)
    return checker
