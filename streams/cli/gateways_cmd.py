"""``paybus gateways check``: validate the configured gateways and routing rules.

The same check runs when a worker starts (:func:`config_errors`), so a misconfigured gateway
stops the worker with the same messages instead of failing payments one by one.
"""

from __future__ import annotations

import typer

from streams.cli.common import console, err_console, settings_of
from streams.settings import Settings


def config_errors(settings: Settings) -> list[str]:
    """Everything wrong with the gateways/rules, each saying what to change."""
    from connectors import registry
    from streams.routing import gateway_errors

    return gateway_errors(settings.gateways, settings.routing_rules, registry.available())


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Payment gateways and routing rules.", no_args_is_help=True)
    group.command("check")(check)
    app.add_typer(group, name="gateways")


def check(ctx: typer.Context) -> None:
    """Validate gateways and rules against the installed connectors; non-zero exit on errors."""
    settings = settings_of(ctx)
    errors = config_errors(settings)
    for error in errors:
        err_console.print(f"[red]x[/] {error}", highlight=False)
    if errors:
        raise typer.Exit(1)
    names = ", ".join(f"{g.name} ({g.connector})" for g in settings.gateways)
    console.print(
        f"ok: {len(settings.gateways)} gateway(s) [{names}], {len(settings.routing_rules)} rule(s)",
        highlight=False,
        markup=False,  # "[stripe (stripe)]" is the list, not a Rich style tag
    )
