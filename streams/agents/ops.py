"""Placeholder: the ops stage is being built (see the open issues)."""

from __future__ import annotations

from typing import Any

from streams.app import PaybusApp


class OpsStage:
    """Attaches nothing yet."""

    def __init__(self, app: PaybusApp, *args: Any) -> None:
        self.app = app
