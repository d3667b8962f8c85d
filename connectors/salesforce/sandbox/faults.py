"""Failure injection and API accounting: the knobs tests turn through ``/_sandbox/...``.

Kept apart from the record logic so the "real" org behaviour reads without test hooks in the way,
and so the admin endpoints have one small object to mutate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .schema import ApiError


@dataclass
class ValidationRule:
    """Fail writes of records whose ``field`` equals ``equals``, or of the record ``record_id``.

    Mirrors a Salesforce validation rule: the error is reported per record
    (``FIELD_CUSTOM_VALIDATION_EXCEPTION`` by default) and other records in a collection call
    are still written. ``remaining`` limits how many writes it fails (None: forever).
    """

    object: str | None = None
    field: str | None = None
    equals: Any = None
    record_id: str | None = None
    error_code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    message: str = "Record rejected by sandbox validation rule"
    remaining: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValidationRule:
        """Build from the admin JSON: object, field, equals, id, errorCode, message, times."""
        rule = cls(
            object=data.get("object"),
            field=data.get("field"),
            equals=data.get("equals"),
            record_id=data.get("id"),
            error_code=str(data.get("errorCode", cls.error_code)),
            message=str(data.get("message", cls.message)),
            remaining=data.get("times"),
        )
        if rule.field is None and rule.record_id is None:
            raise ApiError(400, "INVALID_RULE", "a rule needs 'field' (with 'equals') or 'id'")
        return rule

    def check(self, obj: str, record: Mapping[str, Any]) -> None:
        """Raise the rule's ApiError when it applies to ``record`` of ``obj``."""
        if self.remaining is not None and self.remaining <= 0:
            return
        if self.object is not None and self.object.lower() != obj.lower():
            return
        if self.record_id is not None:
            hit = record.get("Id") is not None and str(record["Id"])[:15] == self.record_id[:15]
        else:
            hit = self.field is not None and record.get(self.field) == self.equals
        if not hit:
            return
        if self.remaining is not None:
            self.remaining -= 1
        raise ApiError(400, self.error_code, self.message, [self.field] if self.field else [])


@dataclass
class Unavailable:
    """Answer the next ``count`` API calls with ``status`` (503 by default)."""

    count: int
    status: int = 503
    error_code: str = "SERVER_UNAVAILABLE"
    message: str = "Server unavailable (sandbox fault injection)"
    path_contains: str | None = None
    method: str | None = None

    def applies(self, method: str, path: str) -> bool:
        """Whether this fault hits a call (and should consume one of its ``count``)."""
        if self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass
class Faults:
    """All active fault injections."""

    unavailable: list[Unavailable] = field(default_factory=list)
    rules: list[ValidationRule] = field(default_factory=list)
    latency_ms: int = 0

    def take_unavailable(self, method: str, path: str) -> ApiError | None:
        """The error for this call if an outage is pending for it, consuming one count."""
        for fault in self.unavailable:
            if fault.applies(method, path):
                fault.count -= 1
                return ApiError(fault.status, fault.error_code, fault.message)
        self.unavailable = [f for f in self.unavailable if f.count > 0]
        return None

    def check_rules(self, obj: str, record: Mapping[str, Any]) -> None:
        """Run every validation rule against a record about to be written."""
        for rule in self.rules:
            rule.check(obj, record)

    def clear(self) -> None:
        """Drop every fault."""
        self.unavailable.clear()
        self.rules.clear()
        self.latency_ms = 0

    def to_json(self) -> dict[str, Any]:
        """State for ``GET /_sandbox/faults``."""
        return {
            "unavailable": [asdict(f) for f in self.unavailable if f.count > 0],
            "rules": [asdict(r) for r in self.rules],
            "latency_ms": self.latency_ms,
        }


@dataclass
class Usage:
    """Daily API request accounting, reported in ``Sforce-Limit-Info`` and ``/limits``."""

    limit: int = 15000
    used: int = 0

    def header(self) -> str:
        """The ``Sforce-Limit-Info`` header value."""
        return f"api-usage={self.used}/{self.limit}"

    def to_json(self) -> dict[str, int]:
        """State for ``GET /_sandbox/usage``."""
        return {"used": self.used, "limit": self.limit, "remaining": max(0, self.limit - self.used)}
