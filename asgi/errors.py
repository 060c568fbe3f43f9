"""Errors in llama-server's (and OpenAI's) shape: {"error": {"code", "message", "type"}}.

Every failure a client can cause is raised as an ApiError (or a pyllama
InvalidRequestError, which maps to 400) and turned into that JSON by one handler in the
app, so no route formats errors by hand and no client ever sees a traceback.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "type": self.type, **self.extra}}


class BadRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class ContextExceeded(ApiError):
    status = 400
    type = "exceed_context_size_error"


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"


class NotSupported(ApiError):
    status = 501
    type = "not_supported_error"


class Unavailable(ApiError):
    status = 503
    type = "unavailable_error"


def error_body(status: int, message: str) -> dict[str, Any]:
    """The body for a status code Quart raised itself (404 route, 405 method, 413 size)."""
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             405: "invalid_request_error", 413: "invalid_request_error", 501: "not_supported_error",
             503: "unavailable_error"}
    return {"error": {"code": status, "message": message, "type": kinds.get(status, "server_error")}}
