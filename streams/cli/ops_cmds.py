"""Operator commands: each group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from streams.cli import backfill_cmd, crm_cmd, dlq_cmd, gateways_cmd, trace_cmd


def register(app: typer.Typer) -> None:
    """Attach the operator command groups to the root app."""
    dlq_cmd.register(app)
    backfill_cmd.register(app)
    gateways_cmd.register(app)
    crm_cmd.register(app)
    trace_cmd.register(app)
