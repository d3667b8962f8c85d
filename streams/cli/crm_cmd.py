"""``paybus crm check``: is the Salesforce org ready for the bus (see ``org_check``)."""

from __future__ import annotations

import typer
from rich.table import Table

from streams.cli.common import CONFIG_EXIT, console, err_console, fail, settings_of

_SHOWN = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "[yellow]note[/]"}


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The CRM (Salesforce) the bus writes back to.", no_args_is_help=True)
    group.command("check")(check)
    app.add_typer(group, name="crm")


def check(ctx: typer.Context) -> None:
    """Objects, fields, the version-guard rule and the API allowance, as the bus's Salesforce
    user sees them; non-zero exit when something would make write-backs or polling fail."""
    import requests
    from simple_salesforce.exceptions import SalesforceError

    from connectors.errors import AuthenticationError, ConnectorError
    from connectors.salesforce.client import SalesforceClient
    from connectors.salesforce.org_check import check_org
    from connectors.salesforce.settings import FieldMap, build_salesforce

    sf = settings_of(ctx).salesforce
    if not sf.instance_url and not sf.username:
        fail(
            "no Salesforce org configured: set PAYBUS_SALESFORCE__INSTANCE_URL with __SESSION_ID,"
            " or __USERNAME, __PASSWORD and __SECURITY_TOKEN",
            code=CONFIG_EXIT,
        )
    # a half-configured org (a URL without a session id, ...) is a ConfigurationError from
    # build_salesforce: the CLI reports it like the case above (error: ..., exit 2)
    try:
        client = SalesforceClient(build_salesforce(sf), timeout_s=15.0)
        findings = check_org(
            client, FieldMap.from_settings(sf), sf.guard_rule, sf.version_guard == "rule",
            sf.no_create_rule,
        )  # fmt: skip
    except AuthenticationError as exc:  # a session expired or revoked, a password changed
        fail(f"cannot check the org: the login was refused ({exc})")
    except (ConnectorError, SalesforceError, requests.RequestException) as exc:  # a login
        # refused, an unreachable instance, a certificate not trusted
        err_console.print(f"cannot check the org: {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"Salesforce org at {sf.instance_url or sf.username}")
    for column in ("object", "check", "result", "detail"):
        table.add_column(column)
    for f in findings:
        table.add_row(f.subject, f.check, _SHOWN[f.ok], f.detail)
    console.print(table)
    failed = [f for f in findings if f.ok is False]
    if failed:
        err_console.print(f"{len(failed)} problem(s): write-backs or polling would fail")
        raise typer.Exit(1)
    console.print("ok: the org has what the bus needs")
