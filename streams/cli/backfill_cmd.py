"""``paybus backfill PSP --since TIME``: re-read a PSP's event log onto the bus.

For webhooks that never arrived (the PSP gave up, the endpoint was down): the connector's
``backfill(since)`` pages the PSP's events and maps them exactly as webhooks are mapped, with
the same event ids, and each is published on ``paybus.payments.events`` keyed by its
aggregate (``acks=all``). The sequencer drops what it already has, so running it over a
window that was partly delivered is safe, and running it twice is too.

Events naming no aggregate (objects paybus did not create) cannot be keyed and are not
published; they are listed as *unresolved* (see :mod:`streams.backfill`). ``--dry-run``
reads and counts without publishing. Exit status: 0 done (unresolved events are reported,
not an error), 1 the PSP or Kafka failed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.cli.common import CONFIG_EXIT, console, err_console, fail, settings_of

_UNRESOLVED_SHOWN = 20


def register(app: typer.Typer) -> None:
    """Attach ``paybus backfill`` to the root app."""
    app.command("backfill")(backfill)


def backfill(
    ctx: typer.Context,
    psp: Annotated[
        # the installed connectors that implement backfill (a unit test keeps this in step)
        str, typer.Argument(help="Connector whose event log to read (gocardless or stripe).")
    ],
    since: Annotated[
        str,
        typer.Option(
            "--since", "-s", help="RFC 3339 time with offset (2024-05-01T12:00:00Z) or a span (6h)."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and count, publish nothing.")
    ] = False,
) -> None:
    """Publish a PSP's events since TIME onto paybus.payments.events (duplicates are dropped)."""
    from kafka import KafkaProducer

    from connectors import registry
    from connectors.base import supports_backfill
    from connectors.errors import ConnectorError, UnknownConnectorError
    from streams.app import build_avro_codec
    from streams.backfill import BackfillReport, event_record, parse_since, run_backfill
    from streams.records import PaymentEvent
    from streams.topics import TopicMap

    settings = settings_of(ctx)
    try:
        start = parse_since(since)
    except ValueError as exc:
        fail(str(exc), code=CONFIG_EXIT)
    if start > datetime.now(UTC):
        err_console.print(
            f"[yellow]warning:[/] --since is ahead of this machine's clock; only events the PSP "
            f"stamped after {start.isoformat()} are read"
        )
    try:
        connector = registry.load(psp, settings)
    except UnknownConnectorError as exc:
        fail(str(exc), code=CONFIG_EXIT)
    if not supports_backfill(connector):
        fail(f"{psp} has no event log paybus can read", code=CONFIG_EXIT)
    topic = TopicMap.from_settings(settings).payment_events.name
    codec = build_avro_codec(settings)
    producer: Any = None
    if not dry_run:
        try:
            producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                client_id="paybus-backfill",
                acks="all",
                linger_ms=5,
                retries=5,
            )
        except Exception as exc:
            fail(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}")
    futures: list[Any] = []

    def send(key: str, event: PaymentEvent) -> None:
        if producer is not None:
            value = codec.encode("PaymentEvent", event_record(event))
            futures.append(producer.send(topic, key=key.encode(), value=value))

    console.print(
        f"backfill {psp} since {start.isoformat()} -> {topic}{' (dry run)' if dry_run else ''}",
        highlight=False,
    )
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )
    try:
        with progress:
            task = progress.add_task(f"reading {psp} events", total=None)

            def tick(report: BackfillReport) -> None:
                progress.update(
                    task,
                    description=f"read {report.read_total}, queued {report.published_total}, "
                    f"unresolved {len(report.unresolved)}, foreign {report.foreign}",
                )

            try:
                report = run_backfill(psp, start, connector.backfill(start), send, on_event=tick)
            except NotImplementedError:
                fail(f"{psp} has no event log paybus can read", code=CONFIG_EXIT)
            except ConnectorError as exc:
                fail(f"reading {psp} events failed: {exc}")
            if producer is not None:
                progress.update(task, description=f"waiting for {len(futures)} acknowledgements")
                producer.flush(60)
                for future in futures:
                    future.get(60)
    except typer.Exit:
        raise
    except Exception as exc:  # Kafka refused or timed out: nothing may be assumed published
        fail(f"publishing to {settings.bootstrap_servers} failed: {exc}")
    finally:
        if producer is not None:
            producer.close(30)
    _summary(report, dry_run)


def _summary(report: Any, dry_run: bool) -> None:
    table = Table(title=f"backfill {report.psp} since {report.since.isoformat()}")
    verb = "to publish" if dry_run else "published"
    for col in ("aggregate type", "status", verb, "unresolved"):
        table.add_column(col, justify="right" if col in (verb, "unresolved") else "left")
    for agg_type, status, published, unresolved in report.rows():
        table.add_row(agg_type, status, str(published), str(unresolved))
    table.add_row(
        "[bold]total[/]",
        "",
        f"[bold]{report.published_total}[/]",
        f"[bold]{len(report.unresolved)}[/]",
    )
    console.print(table)
    if report.unresolved:
        err_console.print(
            f"[yellow]{len(report.unresolved)} event(s) name no paybus aggregate "
            "(objects paybus did not create) and were not published:[/]"
        )
        shown = Table("event id", "type", "status", "psp object", "occurred at")
        for event in report.unresolved[:_UNRESOLVED_SHOWN]:
            shown.add_row(
                event.event_id,
                event.aggregate_type,
                event.status,
                event.psp_object_id or "",
                event.occurred_at.isoformat(),
            )
        err_console.print(shown)
        if len(report.unresolved) > _UNRESOLVED_SHOWN:
            err_console.print(f"... and {len(report.unresolved) - _UNRESOLVED_SHOWN} more")
    console.print(
        f"{'would publish' if dry_run else 'published'} {report.published_total}, "
        f"unresolved {len(report.unresolved)}, foreign {report.foreign} (other systems' "
        "objects on this PSP account, skipped)",
        highlight=False,
    )
