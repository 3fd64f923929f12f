"""Domain errors. They carry meaning, not HTTP codes: `app.http.problems` maps them."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected failure."""

    code = "domain_error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(DomainError):
    """The request is well-formed but its content is not acceptable."""

    code = "invalid_input"


class NotFound(DomainError):
    """The named thing does not exist (or did not at the requested instant)."""

    code = "not_found"


class PayloadTooLarge(DomainError):
    """An upload or body is larger than the configured limit."""

    code = "payload_too_large"


class Forbidden(DomainError):
    """The actor may not do this (a rule, not a missing role)."""

    code = "forbidden"


class Conflict(DomainError):
    """The current state does not allow the command."""

    code = "conflict"


class ConcurrencyConflict(Conflict):
    """The stream moved on since it was read: expected version does not match."""

    code = "concurrency_conflict"


class IdempotencyKeyReused(DomainError):
    """An idempotency key was sent again with a different request."""

    code = "idempotency_key_reused"
