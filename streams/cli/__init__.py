"""The ``paybus`` command line: one Typer app, command groups in sibling modules.

The settings model is built once in the root callback (from ``PAYBUS_*`` and the global
options) and handed to every command through the Typer context. Errors are reported one way,
``error: <message>`` and a non-zero exit (see :mod:`streams.cli.common`).
"""

from __future__ import annotations

import typer

from streams.cli import basics, data, ops_cmds, runtime
from streams.cli.common import PaybusGroup, state_callback
from streams.cli.lag_cmd import lag

app = typer.Typer(
    name="paybus",
    cls=PaybusGroup,
    help="paybus: a Kafka-native payment integration bus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.callback()(state_callback)
basics.register(app)
data.register(app)
runtime.register(app)
ops_cmds.register(app)
app.command("lag")(lag)


def main() -> None:
    """Console-script entry point."""
    app()
