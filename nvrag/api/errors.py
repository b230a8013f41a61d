"""Errors in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, for every failure the API returns.

Domain errors become 400 (bad input), 404 (no such index or model), 409 (another writer holds the index),
422 (a body that does not validate), 429 (too much work queued) or 507 (the data directory cannot be written:
a full disk, a read-only file system); the message is the domain error's own line.
"""

from __future__ import annotations

from typing import Any

from nvrag.errors import (
    ConfigError,
    FilterError,
    IndexBusyError,
    IndexNotFoundError,
    InputError,
    InstructionError,
    ModelMemoryError,
    ModelMismatchError,
    NvRagError,
    OverloadedError,
    StorageError,
    UnknownModelError,
)

# (status, type, code) for each domain error, most specific first
_STATUS: tuple[tuple[type[NvRagError], int, str, str], ...] = (
    (IndexNotFoundError, 404, "not_found_error", "index_not_found"),
    (UnknownModelError, 404, "not_found_error", "model_not_found"),
    (IndexBusyError, 409, "conflict_error", "index_busy"),
    (OverloadedError, 429, "rate_limit_error", "queue_full"),
    (ModelMemoryError, 503, "service_unavailable_error", "model_memory"),
    (StorageError, 507, "insufficient_storage_error", "storage_unavailable"),
    (ModelMismatchError, 400, "invalid_request_error", "model_mismatch"),
    (FilterError, 400, "invalid_request_error", "invalid_filter"),
    (InstructionError, 400, "invalid_request_error", "invalid_instruction"),
    (InputError, 400, "invalid_request_error", "invalid_input"),
    (ConfigError, 400, "invalid_request_error", "invalid_value"),
)


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def for_domain_error(exc: NvRagError) -> tuple[int, dict[str, Any]]:
    """The status and body for a domain error (anything not listed: 503, the server cannot serve it now): its
    message with the hint in a request's terms (``NvRagError.for_api``), ``param`` the field the hint names."""
    param = exc.hint.field if exc.hint is not None else None
    for kind, status, name, code in _STATUS:
        if isinstance(exc, kind):
            return status, error_body(exc.for_api(), name, code, param)
    return 503, error_body(exc.for_api(), "service_unavailable_error", "unavailable", param)


class APIError(Exception):
    """An error the API raises itself (auth, limits, unsupported parameters)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
