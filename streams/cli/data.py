"""``paybus schemas ...``, ``paybus publish ...``, ``paybus sequence``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.common import console, err_console, fail, settings_of

schemas_app = typer.Typer(help="Check and freeze the Avro contract.", no_args_is_help=True)
publish_app = typer.Typer(help="Publish records from files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(schemas_app, name="schemas")
    app.add_typer(publish_app, name="publish")
    app.command("sequence")(sequence)


@schemas_app.command("check")
def schemas_check() -> None:
    """Parse every schema and fail on a change that breaks the last release."""
    from streams.schema_check import check

    results = check()
    table = Table(title="schemas/ against schemas/release.json")
    for col in ("schema", "verdict", "detail"):
        table.add_column(col)
    for r in results:
        colour = "green" if r.ok else "red"
        table.add_row(r.name, f"[{colour}]{r.status}[/]", r.detail)
    console.print(table)
    if not all(r.ok for r in results):
        fail("schema check failed: make the change backward compatible (add fields with defaults)")


@schemas_app.command("freeze")
def schemas_freeze(version: Annotated[str, typer.Argument(help="Release version.")]) -> None:
    """Record the current schemas as the last release (run at release time)."""
    from streams.schema_check import freeze

    try:
        console.print(f"wrote {freeze(version)}")
    except ValueError as exc:
        fail(str(exc))


@publish_app.command("crm-changes")
def publish_crm_changes(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSON lines, one CrmChange per line ('-' = stdin).")],
) -> None:
    """Validate every line, publish the valid ones, report the invalid ones by line number."""
    from streams.app import build_avro_codec
    from streams.jsonl import UserLines, parse_lines
    from streams.publisher import Publisher, check_crm_change

    settings = settings_of(ctx)
    source = UserLines(file)
    codec = build_avro_codec(settings)
    # every line is read before anything is published: a file that is not text publishes none
    parsed = list(parse_lines(codec, "CrmChange", source, check=check_crm_change))
    bad = [p for p in parsed if p.error is not None]
    good = [p for p in parsed if p.record is not None]
    for p in bad:
        err_console.print(  # one unwrapped line per error: editors and grep read FILE:LINE
            f"{p.where(source.name)}: {p.error}", highlight=False, markup=False, soft_wrap=True
        )
    if good:
        try:
            with Publisher(
                settings.bootstrap_servers, topic_prefix=settings.topic_prefix, codec=codec
            ) as pub:
                results = pub.publish_crm_changes([p.record for p in good if p.record])
        except Exception as exc:
            fail(f"publishing to {settings.bootstrap_servers} failed: {exc}")
        for p, where in zip(good, results, strict=True):
            console.print(
                f"line {p.number}: {where.key} -> {where.topic}[{where.partition}]@{where.offset}",
                highlight=False,
            )
    console.print(f"published {len(good)}, invalid {len(bad)}")
    if bad:
        raise typer.Exit(1)


def sequence(
    input_path: Annotated[
        str, typer.Option("--input", "-i", help="JSON lines of canonical events ('-' = stdin).")
    ],
    max_seen: Annotated[int, typer.Option(help="Recent event ids kept per aggregate.")] = 64,
    max_held: Annotated[int, typer.Option(help="Held events kept per aggregate.")] = 32,
) -> None:
    """Judge a history offline with the bus's own sequencer: outcomes, then final states."""
    from streams.jsonl import UserLines
    from streams.offline import run_sequence

    source = UserLines(input_path)
    code = run_sequence(
        source, sys.stdout, sys.stderr, source=source.name,
        max_seen=max_seen, max_held=max_held,
    )  # fmt: skip
    raise typer.Exit(code)
