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
    from streams.routing import DEFAULT_RULES, gateway_errors

    errors = gateway_errors(settings.gateways, settings.routing_rules, registry.available())
    if tuple(settings.routing_rules) == DEFAULT_RULES:
        # the user set gateways only: the rules they never wrote name the missing gateway
        hint = " (a default routing rule; set PAYBUS_ROUTING_RULES to route to yours)"
        errors = [e + hint if e.startswith("routing rule ") else e for e in errors]
    return errors


def config_warnings(settings: Settings) -> list[str]:
    """What the configuration allows but cannot route (see :func:`streams.routing.unrouted`)."""
    from streams.routing import unrouted

    return unrouted(settings.gateways, settings.routing_rules)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Payment gateways and routing rules.", no_args_is_help=True)
    group.command("check")(check)
    app.add_typer(group, name="gateways")


def check(ctx: typer.Context) -> None:
    """Validate gateways and rules against the installed connectors; non-zero exit on errors."""
    settings = settings_of(ctx)
    errors = config_errors(settings)
    for error in errors:
        err_console.print(f"error: {error}", highlight=False, markup=False)
    for warning in config_warnings(settings):
        err_console.print(f"warning: {warning}", highlight=False, markup=False)
    if errors:
        raise typer.Exit(1)
    names = ", ".join(f"{g.name} ({g.connector})" for g in settings.gateways)
    console.print(
        f"ok: {len(settings.gateways)} gateway(s) [{names}], {len(settings.routing_rules)} rule(s)",
        highlight=False,
        markup=False,  # "[stripe (stripe)]" is the list, not a Rich style tag
    )
