"""What the server and its preparation process (asgi/prep_child.py) send each other: a
`Job` (and then the raw body) one way, a `Reply` the other. Kept apart from both sides so
that the job functions (asgi/prep_jobs.py) and the server (asgi/prep_process.py) share
these types without importing each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from asgi.errors import ApiError
from pyllama.chat.reasoning import ReasoningConfig
from pyllama.errors import ContextFullError, InvalidRequestError, PyllamaError

log = logging.getLogger("asgi.prep")

Failure = tuple[int, str, str, dict[str, Any]]  # status, error type, message, extra fields


@dataclass(frozen=True)
class ModelKey:
    """What a model's tokenizer and template depend on: its GGUF and --chat-template."""

    path: str
    chat_template: str | None = None


@dataclass
class ChildConfig:
    """Server settings the preparation needs, fixed for the life of the process."""

    reasoning: ReasoningConfig
    chat_template_kwargs: dict[str, Any]
    limits: Any  # asgi.params.RequestLimits
    system_prompt: str = ""
    nice: int = 10  # added to the process's nice value (see asgi.prep_child.serve)


@dataclass
class Job:
    # "tokenize" | "apply-template" | "completion" | "infill" | "embeddings" | "rerank" |
    # a chat shape ("chat", "anthropic", "responses"), or one with "-count" (a token count) |
    # "load" (read a vocabulary ahead of use)
    kind: str
    default: ModelKey  # the model a body without (or with an unknown) "model" field means
    keys: dict[str, ModelKey] = field(default_factory=dict)  # model names and aliases (several models)
    fits: dict[ModelKey, tuple[int, int]] = field(default_factory=dict)  # loaded models: n_ctx, longest piece


@dataclass
class Reply:
    """A job's outcome: `error` (status, type, message, extra fields) or the results."""

    model: Any = None  # the body's "model" field, for the server to resolve as it always does
    key: ModelKey | None = None  # the vocabulary the job used
    error: Failure | None = None
    payload: bytes = b""  # a whole answer's JSON text (/tokenize, /apply-template)
    body: dict[str, Any] = field(default_factory=dict)  # the body without its large fields
    fields: dict[str, Any] = field(default_factory=dict)  # chat: completion fields (render_chat); others: read fields
    aside: dict[str, Any] = field(default_factory=dict)  # chat shapes: fields the route keeps out of the chat body
    prompt: Any = None  # chat: the ChatPrompt without its text (never needed after tokenizing)
    tokens: bytes = b""  # chat: the prompt's token ids, array("i") bytes
    prompts: list[bytes] | None = None  # token ids of each prompt or part (None: no prompt field)
    prompt_error: Failure | None = None  # raised by the server after its own checks (which come first in-process)


def failure(exc: Exception) -> Failure:
    """The answer an error gets, as the server's error handlers would give it in-process."""
    if isinstance(exc, ApiError):
        return exc.status, exc.type, exc.message, dict(exc.extra)
    if isinstance(exc, InvalidRequestError):
        kind = "exceed_context_size_error" if isinstance(exc, ContextFullError) else "invalid_request_error"
        return 400, kind, str(exc), {}
    if isinstance(exc, PyllamaError):
        return 500, "server_error", str(exc), {}
    log.exception("request preparation failed")  # the log keeps the traceback, the answer says nothing inside
    return 500, "server_error", "Internal Server Error", {}
