"""GoCardless connector: maps GoCardless payments, mandates and refunds onto paybus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.gocardless.connector import GoCardlessConnector

__all__ = ["GoCardlessConnector"]


def __getattr__(name: str) -> Any:
    """Import the connector on first use: ``connectors.gocardless.sandbox`` lives in this
    package too, and running the sandbox must not pull in the bus (Faust, records)."""
    if name == "GoCardlessConnector":
        from connectors.gocardless.connector import GoCardlessConnector

        return GoCardlessConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
