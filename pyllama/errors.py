"""Errors that reach the user as one line: the CLI prints them, the server maps them to HTTP."""

from __future__ import annotations


class PyllamaError(Exception):
    """Base of every error pyllama raises on purpose."""


class ModelLoadError(PyllamaError):
    """The model file cannot be used: missing, malformed, or needs an unsupported feature."""


class InvalidRequestError(PyllamaError, ValueError):
    """A caller passed a value the engine cannot honour (maps to HTTP 400)."""


class ContextFullError(InvalidRequestError):
    """The prompt does not fit in the context window."""
