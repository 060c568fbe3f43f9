"""The Jinja environment chat templates run in.

A model's chat template is code from the model file, so it is rendered in jinja2's
immutable sandbox: a template can read what it is given but cannot reach Python
internals or mutate the request. The options and helpers mirror what llama.cpp's Jinja
engine and Hugging Face's `apply_chat_template` provide, because templates are written
against those: `trim_blocks` + `lstrip_blocks`, `loopcontrols`, `raise_exception`,
`strftime_now`, and a `tojson` that keeps non-ASCII text and accepts `indent`.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pyllama.errors import InvalidRequestError


class TemplateError(InvalidRequestError):
    """A chat template failed to parse or raised while rendering (maps to HTTP 400)."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(f"chat template raised an exception: {message}")


def _strftime_now(fmt: str) -> str:
    return time.strftime(fmt, time.localtime())


def _tojson(
    value: Any,
    indent: int | None = None,
    ensure_ascii: bool = False,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatUndefined(jinja2.Undefined):
    """An undefined name added to a string is the empty string, as in llama.cpp's Jinja
    engine: firefunction-v2's template appends `functions`, which no caller defines."""

    def __add__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """One shared sandbox; compiled templates are cached by `compile_template`."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        extensions=[jinja2.ext.loopcontrols],
        undefined=ChatUndefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """Parse a template once; a syntax error becomes a one-line TemplateError."""
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not parse: {exc.message} (line {exc.lineno})") from None


def render(source: str, context: dict[str, Any]) -> str:
    """Render `source` with `context`; any failure inside the template is a TemplateError."""
    template = compile_template(source)
    try:
        return template.render(**context)
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template failed: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
