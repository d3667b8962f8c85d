"""What every command shares: the settings in the context, and error reporting."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console

from streams.settings import Settings

console = Console()
err_console = Console(stderr=True)


def state_callback(
    ctx: typer.Context,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap", "-b", help="Kafka bootstrap servers (PAYBUS_BOOTSTRAP_SERVERS)."
        ),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="embedded or production (PAYBUS_PROFILE).")
    ] = None,
) -> None:
    """paybus: a Kafka-native payment integration bus."""
    overrides: dict[str, str] = {}
    if bootstrap:
        overrides["bootstrap_servers"] = bootstrap
    if profile:
        overrides["profile"] = profile
    try:
        ctx.obj = Settings(**overrides)  # type: ignore[arg-type]
    except PydanticValidationError as exc:
        fail(f"invalid configuration:\n{exc}")


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
