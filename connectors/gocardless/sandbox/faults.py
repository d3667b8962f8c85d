"""Injected faults: the next N API requests under a path answer with an error.

A test of how the bus rides out a GoCardless blip needs GoCardless to fail on cue, on the
requests it chooses (a payout look-up, not the payment creates around it), and then recover
by itself, without a proxy in the way. ``POST /_sandbox/faults`` with
``{"path_prefix": "/payouts/", "count": 3, "status": 503}`` makes the next three API requests
whose path starts with ``/payouts/`` (any method; ``"method"`` narrows it) fail with a
GoCardless-shaped 503, which the ``gocardless_pro`` client raises as a
``GoCardlessInternalError`` (429: a ``RateLimitError``); later requests are served as usual.
Faults are kept in memory only (a restarted sandbox has none) and are checked in the order
they were added; admin routes are never faulted.

- ``POST   /_sandbox/faults`` -> the fault added, with its id
- ``GET    /_sandbox/faults`` -> ``{"faults": [...]}`` still armed (``remaining`` > 0),
  ``{"injected": n}`` answered so far
- ``DELETE /_sandbox/faults`` -> disarm all
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ApiProblem, api_usage

#: Status codes a fault may answer with: what a PSP outage or throttling looks like.
STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class Fault:
    """One armed fault: requests under ``path_prefix`` (and ``method``, if given) fail."""

    id: int
    path_prefix: str
    remaining: int
    status: int = 503
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self.remaining > 0 and path.startswith(self.path_prefix)


class Faults:
    """The armed faults of one sandbox (touched on its event loop only)."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []
        self.injected = 0
        self._ids = itertools.count(1)

    def add(self, body: dict[str, Any]) -> Fault:
        """Arm a fault from an admin request's body (400 for a bad one)."""
        try:
            prefix = str(body["path_prefix"])
            count = int(body.get("count", 1))
            status = int(body.get("status", 503))
        except (KeyError, TypeError, ValueError) as exc:
            raise api_usage(400, "invalid_fault", f"Bad fault: {exc!r}") from exc
        method = body.get("method")
        if not prefix.startswith("/") or prefix.startswith("/_sandbox"):
            raise api_usage(400, "invalid_fault", "path_prefix must be an API path ('/...')")
        if count < 1 or status not in STATUSES:
            raise api_usage(400, "invalid_fault",
                            f"count must be >= 1 and status one of {sorted(STATUSES)}")  # fmt: skip
        fault = Fault(
            next(self._ids), prefix, count, status, str(method).upper() if method else None
        )
        self.armed.append(fault)
        return fault

    def take(self, method: str, path: str) -> ApiProblem | None:
        """The error to answer this request with, using up one of its fault's count; None
        when no armed fault matches."""
        for fault in self.armed:
            if fault.matches(method, path):
                fault.remaining -= 1
                self.injected += 1
                self.armed = [f for f in self.armed if f.remaining > 0]
                return _problem(fault.status)
        return None

    def clear(self) -> None:
        self.armed = []

    def to_json(self) -> dict[str, Any]:
        return {"faults": [asdict(f) for f in self.armed], "injected": self.injected}


def _problem(status: int) -> ApiProblem:
    """The error GoCardless answers with: ``gocardless`` (internal) for a 5xx, a rate limit
    as ``invalid_api_usage`` / ``rate_limit_exceeded``."""
    if status == 429:
        return api_usage(429, "rate_limit_exceeded", "Too many requests (injected fault)")
    message = "Injected fault: the sandbox is pretending to be down"
    return ApiProblem(status, "gocardless", message,
                      [{"reason": "internal_server_error", "message": message}])  # fmt: skip
