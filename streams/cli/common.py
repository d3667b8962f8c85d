"""What every command shares: the settings in the context, and error reporting.

Errors reach the user one way: :func:`fail` prints ``error: <message>`` on stderr and exits
non-zero. Commands call it for what they check themselves; :class:`PaybusGroup` calls it for a
:class:`~streams.errors.PaybusError` a command lets escape (a named failure is the user's to
fix and deserves its message, not a traceback), and :func:`state_callback` for settings that
do not load.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import SettingsError
from rich.markup import escape
from typer.core import TyperGroup

from streams.errors import ConfigurationError, PaybusError
from streams.settings import Settings
from streams.settings_check import unknown_variables
from streams.terminal import make_console

console = make_console()
err_console = make_console(stderr=True)


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
        fail(f"invalid configuration: {validation_error_message(exc, overrides)}", code=CONFIG_EXIT)
    except SettingsError as exc:  # a complex field's variable is not JSON
        fail(f"invalid configuration: {settings_error_message(exc)}", code=CONFIG_EXIT)
    for warning in unknown_variables(os.environ):
        err_console.print(f"warning: {warning}", highlight=False, markup=False)
    if ctx.invoked_subcommand not in _OWN_LOGGING:
        _BrokerWait.install(ctx.obj.bootstrap_servers)


#: Commands that set up logging of their own (a worker logs kafka-python's warnings itself).
_OWN_LOGGING = {"worker", "dev", "broker", "bench"}


class _BrokerWait(logging.Handler):
    """Says once, on stderr, that a command is still trying to reach Kafka and why.

    kafka-python retries an unreachable bootstrap server for 30 s, logging each failure to its
    own loggers only, so ``paybus lag`` against a wrong port sat silent for 30 s before its
    error. The first failed attempt is enough to say what is going on."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(logging.WARNING)
        self.bootstrap = bootstrap
        self.said = False

    @classmethod
    def install(cls, bootstrap: str) -> None:
        logger = logging.getLogger("kafka.net.manager")
        if not any(isinstance(h, cls) for h in logger.handlers):
            logger.addHandler(cls(bootstrap))

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.said or not message.startswith("Bootstrap"):
            return
        self.said = True
        reason = (  # "Bootstrap connection to X failed: <why> (backoff ...)", or "not ready"
            message.split("failed: ", 1)[1].split(" (backoff")[0]
            if "failed: " in message
            else "no answer yet"
        )
        err_console.print(
            f"waiting for Kafka at {self.bootstrap}: {reason} (giving up after 30 s)",
            highlight=False, markup=False,
        )  # fmt: skip


#: The command-line options that override a setting, named in its error instead of its variable.
_OPTION_OF = {"bootstrap_servers": "--bootstrap", "profile": "--profile"}


def _secret(loc: list[str]) -> bool:
    words = ("secret", "key", "token", "password", "session")
    return any(word in part.lower() for part in loc for word in words)


def validation_error_message(exc: PydanticValidationError, overrides: dict[str, str]) -> str:
    """Each value that does not load, named as the user set it (``PAYBUS_PARTITIONS``,
    ``PAYBUS_STRIPE__API_KEY`` or ``--profile``) with pydantic's complaint, one per line, without
    pydantic's class name, error codes and documentation links."""
    lines = []
    for error in exc.errors():
        parts = list(error["loc"])
        # the variable's own path ends where a JSON value's begins (PAYBUS_GATEWAYS: [0].name)
        cut = next((i for i, part in enumerate(parts) if isinstance(part, int)), len(parts))
        loc, inner = [str(part) for part in parts[:cut]], parts[cut:]
        if loc and loc[0] in overrides and loc[0] in _OPTION_OF:
            name = _OPTION_OF[loc[0]]
        else:
            name = "PAYBUS_" + "__".join(loc).upper() if loc else "PAYBUS_*"
        if inner:
            name += ": " + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inner)
        what = error["msg"]
        if error["type"] == "extra_forbidden":
            what = "not a setting (see `paybus config` and the README's configuration table)"
        elif "input" in error and not isinstance(error["input"], dict) and not _secret(loc):
            what = f"{what}, got {error['input']!r}"
        lines.append(f"{name}: {what}")
    return "; ".join(lines)


def settings_error_message(exc: SettingsError) -> str:
    """What pydantic-settings' "error parsing value for field" means in the user's terms: which
    ``PAYBUS_*`` variable is not JSON, and the decoder's complaint."""
    found = re.search(r'field "([^"]+)"', str(exc))
    if found is None:
        return str(exc)
    var = f"PAYBUS_{found.group(1).upper()}"
    set_now = sorted(k for k in os.environ if k.upper() == var or k.upper().startswith(var + "__"))
    name = " or ".join(set_now) or var
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        detail = f"{cause.msg} (column {cause.colno})"
    else:
        detail = str(cause or exc)
    return f"{name}: bad JSON: {detail}"


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


#: The exit code of every configuration error, whether the settings do not load (a bad
#: ``PAYBUS_*`` value) or a command finds what it needs missing: scripts tell "fix the
#: configuration" (2) from "the work failed" (1).
CONFIG_EXIT = 2


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code`` (the message is printed
    as-is: file names and JSON in it are not Rich markup, and a long ``FILE:LINE: ...`` line
    is not wrapped, so tools that parse it see one line)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class PaybusGroup(TyperGroup):
    """The root command group: a :class:`PaybusError` escaping any command becomes
    ``error: <message>`` through :func:`fail`, exit 2 for a :class:`ConfigurationError` (the
    same as a command that finds its configuration missing) and 1 otherwise."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's Context type lives in a private module
        try:
            return super().invoke(ctx)
        except PaybusError as exc:
            fail(str(exc), code=CONFIG_EXIT if isinstance(exc, ConfigurationError) else 1)
