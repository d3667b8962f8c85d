"""GoCardless-shaped API errors.

The real ``gocardless_pro`` client picks its exception class from the HTTP status and the
error's ``type``, and for ``invalid_state`` reads every entry's ``reason`` (a missing one is a
KeyError inside the client), while ``ValidationFailedError.__str__`` formats ``field``,
``message`` and ``request_pointer`` of each entry. So every error built here carries exactly
those keys: a connector tested against the sandbox then meets the same exceptions it will meet
in production.
"""

from __future__ import annotations

import uuid
from typing import Any

DOCS = "https://developer.gocardless.com/api-reference#"


class ApiProblem(Exception):
    """An error the sandbox answers in GoCardless's ``{"error": {...}}`` envelope."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.errors = errors or []

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body, as GoCardless sends it."""
        anchor = self.errors[0].get("reason", self.error_type) if self.errors else self.error_type
        return {
            "error": {
                "message": self.message,
                "documentation_url": DOCS + str(anchor),
                "type": self.error_type,
                "request_id": request_id or str(uuid.uuid4()),
                "code": self.status,
                "errors": self.errors,
            }
        }


def validation_failed(envelope: str, problems: list[tuple[str, str, str]]) -> ApiProblem:
    """422 ``validation_failed`` naming each (field, message, reason)."""
    errors = [
        {
            "field": field,
            "message": message,
            "reason": reason,
            "request_pointer": f"/{envelope}/" + field.replace(".", "/"),
        }
        for field, message, reason in problems
    ]
    return ApiProblem(422, "validation_failed", "Validation failed", errors)


def invalid_state(reason: str, message: str, links: dict[str, str] | None = None) -> ApiProblem:
    """422 ``invalid_state`` (or 409 for an idempotency conflict, see ``idempotent_conflict``)."""
    entry: dict[str, Any] = {"reason": reason, "message": message}
    if links:
        entry["links"] = links
    return ApiProblem(422, "invalid_state", message, [entry])


def idempotent_conflict(resource_id: str) -> ApiProblem:
    """409 ``invalid_state`` / ``idempotent_creation_conflict``, as GoCardless answers it."""
    message = "A resource has already been created with this idempotency key"
    problem = invalid_state(
        "idempotent_creation_conflict", message, {"conflicting_resource_id": resource_id}
    )
    problem.status = 409
    return problem


def api_usage(status: int, reason: str, message: str) -> ApiProblem:
    """``invalid_api_usage`` errors: 400 bad requests, 401, 404 not found, 405."""
    return ApiProblem(
        status, "invalid_api_usage", message, [{"reason": reason, "message": message}]
    )


def not_found(resource_type: str, resource_id: str) -> ApiProblem:
    """404 for an unknown id, as GoCardless answers ``GET /payments/PM_UNKNOWN``."""
    return api_usage(
        404, "resource_not_found", f"Resource not found: {resource_type}/{resource_id}"
    )
