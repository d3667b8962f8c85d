"""``paybus trace ID``: one payment's (or mandate's) story across the bus, as the bus wrote it.

The question an operator gets asked most, "where is this payment?", answered from Kafka
itself: the intent from the CRM, the command to the PSP, the PSP's webhooks, the events, each
status written back, retries, dead letters, and what the sequencer holds now (see
:mod:`streams.trace`). Refunds share their payment's key: trace the payment id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from kafka.errors import KafkaError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streams.cli.common import console, fail, settings_of
from streams.sequencing_state import format_time
from streams.topics import TopicMap

if TYPE_CHECKING:
    from streams.trace import Trace


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)


def trace_cmd(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The payment (or mandate) id: the records' key.")],
    app_id: Annotated[
        str | None, typer.Option(help="The sequencer workers' app id (default PAYBUS_APP_ID).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each read may take (a week's partition is large).")
    ] = 30.0,
) -> None:
    """Everything the bus holds about one payment, as the bus wrote it (refunds included)."""
    from streams.app import build_avro_codec
    from streams.trace import trace  # Faust and the agents' modules: only when tracing

    settings = settings_of(ctx)
    topics = TopicMap.from_settings(settings)
    state_topic = f"{app_id or settings.app_id}-sequencer-state-changelog"
    try:
        with console.status(f"reading what the bus holds about {escape(key)}"):
            found = trace(settings.bootstrap_servers, topics, key, build_avro_codec(settings),
                          state_topic=state_topic, timeout_s=timeout)  # fmt: skip
    except KafkaError as exc:
        fail(f"cannot read the bus at {settings.bootstrap_servers}: {exc}")
    if not found.steps and not found.states:
        fail(f"nothing on the bus is keyed {key!r} (a refund is keyed by its payment's id)")
    console.print(_table(found, topics.prefix, key))
    for agg, state in sorted(found.states.items()):
        held = ", ".join(f"{e.status} ({e.event_id})" for e in state.held)
        console.print(
            f"sequencer: {agg} is {state.status} (seq {state.seq}, since "
            f"{format_time(state.latest_at) if state.latest_at else '-'})"
            + (f"; held: {held}" if held else ""),
            highlight=False, markup=False,
        )  # fmt: skip
    for topic, why in sorted(found.skipped.items()):
        console.print(f"not (fully) read: {topic}: {why}", style="yellow", highlight=False,
                      markup=False)  # fmt: skip


def _table(found: Trace, prefix: str, key: str) -> Table:
    title = Text(f"{key}: {len(found.steps)} record(s)")
    table = Table(title=title, title_justify="left")
    for name in ("at", "topic", "what", "aggregate", "details"):
        table.add_column(name, overflow="fold")
    for step in found.steps:
        # Text, not str: a cell's str is read as rich markup, and records quote PSP and CRM
        # text ("metadata[note]" vanished as a style, "[/...]" stopped the command)
        cells = (format_time(step.at), step.topic.removeprefix(f"{prefix}."), step.kind,
                 step.aggregate_id, step.summary)  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))
    return table
