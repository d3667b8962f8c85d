"""Salesforce connector: CRM source poller and write-back (see DESIGN.md).

Exports load lazily, so ``python -m connectors.salesforce.sandbox`` does not import Faust.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SalesforceClient": "client",
    "CrmWriter": "writer",
    "WriteReport": "writer",
    "UpdateResult": "writer",
    "Outcome": "writer",
    "ChangePoller": "poller",
    "ChangeBatch": "poller",
    "Watermark": "poller",
    "WatermarkStore": "poller",
    "MemoryWatermarkStore": "poller",
    "FileWatermarkStore": "poller",
    "FailureAlerter": "alerts",
    "SmtpSettings": "alerts",
    "FieldMap": "settings",
    "ObjectMapping": "settings",
    "build_salesforce": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
