"""Placeholder: these commands are being built (see the open issues)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this command group to the root app (nothing yet)."""
