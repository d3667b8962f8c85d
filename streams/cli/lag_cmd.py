"""``paybus lag``: consumer lag of any group as a table, once or live (``--watch``).

The same numbers the workers export as ``paybus_consumer_lag``, read from the outside, so an
operator can check a group that has no worker running (or a group that is not paybus's).
Registered by the CLI with ``app.command("lag")(lag)``.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from kafka.errors import KafkaError
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.cli.common import console, fail, settings_of
from streams.errors import PaybusError
from streams.lag import (
    SOURCES,
    PartitionLag,
    Source,
    all_lag,
    format_offset,
    format_rows,
    list_groups,
    summarize,
)


def lag_table(rows: list[PartitionLag], title: str) -> Group:
    """The per-partition table and, under it, the per-topic totals."""
    table = Table(title=title, title_justify="left")
    for name in ("group", "topic", "partition", "committed", "end", "lag"):
        table.add_column(name, justify="right" if name not in ("group", "topic") else "left")
    for cells, row in zip(format_rows(rows), rows, strict=True):
        style = "yellow" if row.lag else ("red" if row.lag is None else None)
        table.add_row(*cells, style=style)
    totals = Table(title="totals", title_justify="left")
    for name in ("group", "topic", "partitions", "lag", "never committed"):
        totals.add_column(name)
    for t in summarize(rows):
        totals.add_row(
            t.group, t.topic, str(t.partitions), format_offset(t.lag), str(t.uncommitted)
        )
    if not rows:
        return Group(Text("no committed offsets found", style="dim"))
    return Group(table, totals)


def _read(bootstrap: str, group: str | None, source: Source) -> list[PartitionLag]:
    try:
        return all_lag(bootstrap, [group] if group else None, source)
    except (KafkaError, PaybusError, OSError) as exc:
        fail(f"cannot read lag from {bootstrap}: {exc}")


def lag(
    ctx: typer.Context,
    group: Annotated[
        str | None, typer.Argument(help="Consumer group (default: every group).")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    source: Annotated[
        str,
        typer.Option(
            help="End offsets from the fetch high-water mark (right everywhere) or from "
            "ListOffsets (cheaper; right on Apache Kafka, short on the embedded broker)."
        ),
    ] = "fetch",
) -> None:
    """Consumer lag per group, topic and partition (committed vs end offset)."""
    if source not in SOURCES:
        fail(f"--source must be one of {', '.join(SOURCES)}")
    src: Source = "fetch" if source == "fetch" else "list_offsets"
    bootstrap = settings_of(ctx).bootstrap_servers
    title = f"consumer lag on {bootstrap}"
    if not watch:
        rows = _read(bootstrap, group, src)
        if group and not rows:  # a typo'd group and an idle one must not look alike to scripts
            known = ", ".join(list_groups(bootstrap)) or "none"
            fail(f"group {group!r} has no committed offsets on {bootstrap} (groups: {known})")
        console.print(lag_table(rows, title))
        return
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                stamp = time.strftime("%H:%M:%S")
                rows = _read(bootstrap, group, src)
                live.update(lag_table(rows, f"{title} at {stamp}"), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
