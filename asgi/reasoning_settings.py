"""The reasoning flags (--reasoning, --reasoning-format, --reasoning-budget) and
--chat-template-kwargs, checked at start-up so a typo exits with one line, not a 500 later.

As in llama.cpp, `--reasoning on|off` is the same as a default `enable_thinking` template
variable; a request's `chat_template_kwargs` still overrides it.
"""

from __future__ import annotations

import json
from typing import Any

from asgi.startup_checks import SettingsError
from pyllama.chat.reasoning import REASONING_FORMATS, ReasoningConfig, parse_mode


def reasoning_flags(values: dict[str, Any]) -> tuple[ReasoningConfig, dict[str, Any]]:
    """The reasoning settings and the default template variables the flags in `values` ask for."""
    mode, fmt, budget = "auto", "auto", -1
    if "reasoning" in values:
        try:
            mode = parse_mode(str(values["reasoning"]))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if "reasoning_format" in values:
        fmt = str(values["reasoning_format"])
        if fmt == "nothink":
            fmt = "none"
        if fmt not in REASONING_FORMATS:
            raise SettingsError(f"--reasoning-format must be one of {', '.join(REASONING_FORMATS)} (got {fmt!r})")
    if "reasoning_budget" in values:
        budget = int(values["reasoning_budget"])
        if budget < -1:
            raise SettingsError(f"--reasoning-budget must be -1, 0 or a positive number of tokens (got {budget})")
    message = str(values.get("reasoning_budget_message") or "")
    config = ReasoningConfig(mode=mode, format=fmt, budget=budget, budget_message=message)
    kwargs: dict[str, Any] = {}
    if "chat_template_kwargs" in values:
        try:
            given = json.loads(values["chat_template_kwargs"])
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--chat-template-kwargs is not valid JSON: {exc.msg}") from None
        if not isinstance(given, dict):
            raise SettingsError("--chat-template-kwargs must be a JSON object")
        kwargs = given
    if mode in ("on", "off"):
        kwargs.setdefault("enable_thinking", mode == "on")
    return config, kwargs
