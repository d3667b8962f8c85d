"""``paybus dlq``: list, show and replay dead letters.

``replay`` puts the original bytes back where they came from, in their original order, and
marks the letters replayed (see :mod:`streams.dlq_store`). A letter whose record was wrong can
be fixed on the way: ``--value-json FILE`` gives the corrected record as JSON, encoded with
the original topic's schema. ``discard`` closes letters that need nothing more (a test event,
a payment settled by hand), with a reason: they stop counting as pending.

A letter with a ``retry_at`` is replayed by the bus itself then (:mod:`streams.auto_replay`):
``list`` shows it ``retrying at ...`` (``(overdue)`` once it waited well past it), ``show``
prints the time. Replaying or discarding it by hand first is fine: the marker closes it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from streams import auto_replay
from streams.cli.common import console, fail, settings_of
from streams.codec import AvroCodec
from streams.dlq_store import Letter, collect, discard, read_dlq, replay, replay_order, select
from streams.jsonl import read_json, text_of_bytes, to_record
from streams.sequencing_state import format_time
from streams.settings import Settings
from streams.topics import TopicMap


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Dead letters: list, show, replay, discard.", no_args_is_help=True)
    group.command("list")(list_letters)
    group.command("show")(show)
    group.command("replay")(replay_cmd)
    group.command("discard")(discard_cmd)
    app.add_typer(group, name="dlq")


def _letters(settings: Settings) -> dict[str, Letter]:
    topic = TopicMap.from_settings(settings).dlq.name
    try:
        return collect(read_dlq(settings.bootstrap_servers, topic))
    except Exception as exc:
        fail(f"cannot read {topic} at {settings.bootstrap_servers}: {exc}")


def list_letters(
    ctx: typer.Context,
    pending: Annotated[
        bool, typer.Option("--pending", help="Hide replayed and discarded letters.")
    ] = False,
) -> None:
    """Dead letters, oldest first; replayed and discarded ones are flagged (or hidden), and
    those the bus replays by itself say when."""
    settings = settings_of(ctx)
    letters = _letters(settings)
    now = datetime.now(UTC)
    grace = auto_replay.overdue_after(settings.ops.dlq_auto_replay_interval_s)
    shown = [lt for lt in letters.values() if not (pending and lt.resolved)]
    table = Table(title=f"{len(shown)} dead letter(s)", title_justify="left")
    for name in (
        "id",
        "stage",
        "where",
        "aggregate",
        "reason",
        "attempts",
        "failed_at",
        "state",
    ):
        table.add_column(name, overflow="fold")
    for lt in sorted(shown, key=lambda x: x.record["failed_at"]):
        r = lt.record
        table.add_row(
            lt.id, r["stage"],
            f"{r['original_topic']}[{r['original_partition']}]@{r['original_offset']}",
            r.get("aggregate_id") or "", str(r["reason"])[:80], str(r.get("attempts", 1)),
            r["failed_at"].isoformat(timespec="seconds"),
            lt.resolution or auto_replay.describe(r, now, grace),  # when and why: `dlq show`
            style="dim" if lt.resolved else None,
        )  # fmt: skip
    console.print(table)


def _json_value(value: Any) -> Any:
    """Timestamps as RFC 3339 and bytes (a webhook's body) as their text, the forms
    ``replay --value-json`` reads back: a record copied from ``show``, fixed and replayed
    needs no reformatting."""
    if isinstance(value, bytes):
        return text_of_bytes(value)
    return format_time(value) if isinstance(value, datetime) else str(value)


def _decoded(settings: Settings, record: dict[str, Any]) -> str:
    tm = TopicMap.from_settings(settings)
    try:
        schema = tm.by_name(record["original_topic"]).value_schema
        decoded = AvroCodec().decode(record["value"], schema)
        return json.dumps(decoded, default=_json_value, indent=2)
    except Exception as exc:
        return f"(not decodable: {exc})"


def show(ctx: typer.Context, letter_id: Annotated[str, typer.Argument(help="Its id.")]) -> None:
    """Everything about one dead letter: where, why, the error log and the original record."""
    settings = settings_of(ctx)
    letter = _letters(settings).get(letter_id)
    if letter is None:
        fail(f"no dead letter {letter_id!r} (see `paybus dlq list`)")
    r = letter.record
    for name in ("dead_letter_id", "stage", "original_topic", "original_partition",
                 "original_offset", "aggregate_id", "reason", "attempts", "failed_at",
                 "retry_at"):  # fmt: skip
        value = r.get(name)
        shown = value.isoformat() if isinstance(value, datetime) else value
        console.print(f"[bold]{name}:[/] {escape(str(shown))}", highlight=False)
    grace = auto_replay.overdue_after(settings.ops.dlq_auto_replay_interval_s)
    closed = f"no ({auto_replay.describe(r, datetime.now(UTC), grace) or 'pending'})"
    if letter.resolved_at is not None:  # the marker's reason says how: "replayed to T" ...
        closed = f"{letter.resolved_at.isoformat()}, {letter.resolution_reason}"
    console.print(f"[bold]closed:[/] {escape(closed)}", highlight=False)
    key = r.get("key")
    console.print(f"[bold]key:[/] {key.decode('utf-8', 'replace') if key else None}")
    console.print("[bold]error log:[/]")
    for line in r.get("error_log") or []:
        console.print(f"  {line}", highlight=False, markup=False)
    console.print(f"[bold]value ({len(r['value'])} bytes):[/]")
    # soft_wrap: a long line is not broken inside a JSON string, so the value saved to a
    # file (or copied from the terminal) is the JSON `replay --value-json` reads
    console.print(_decoded(settings, r), highlight=False, markup=False, soft_wrap=True)


def replay_cmd(
    ctx: typer.Context,
    letter_id: Annotated[str | None, typer.Argument(help="One letter's id.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every pending letter.")] = False,
    aggregate: Annotated[str | None, typer.Option(help="Pending letters of one aggregate.")] = None,
    value_json: Annotated[
        Path | None, typer.Option(help="The fixed record as JSON (with one letter id).")
    ] = None,
) -> None:
    """Re-inject letters' original bytes to their original topic, in original order."""
    settings = settings_of(ctx)
    _one_choice(letter_id, everything, aggregate)
    if value_json is not None and letter_id is None:
        fail("--value-json fixes one letter: give its id")
    # read before Kafka is asked anything: a missing or malformed file is the user's to fix,
    # named as FILE or FILE:LINE:COL (InputError, reported by the CLI), not a schema mismatch
    fixed = read_json(value_json) if value_json is not None else None
    chosen = _chosen(settings, letter_id, everything, aggregate)
    if not chosen:
        console.print("nothing to replay")
        return
    values: dict[str, bytes] = {}
    if value_json is not None and letter_id is not None:
        if not isinstance(fixed, dict):
            fail(f"{value_json}: expected a JSON object (the record), got {type(fixed).__name__}")
        topic = chosen[0].record["original_topic"]
        try:
            schema = TopicMap.from_settings(settings).by_name(topic).value_schema
        except KeyError:
            fail(f"{topic} is not a topic of this bus's topic map: no schema to encode with")
        codec = AvroCodec()
        try:
            values[letter_id] = codec.encode(schema, to_record(codec, schema, fixed))
        except Exception as exc:
            fail(f"the fixed record in {value_json} does not fit {topic}'s schema: {exc}")
    done = replay(settings.bootstrap_servers, TopicMap.from_settings(settings).dlq.name,
                  replay_order(chosen), values=values)  # fmt: skip
    for lt in done:
        r = lt.record
        console.print(
            f"replayed {lt.id} -> {r['original_topic']}[{r['original_partition']}]",
            highlight=False,
        )


def discard_cmd(
    ctx: typer.Context,
    letter_id: Annotated[str | None, typer.Argument(help="One letter's id.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every pending letter.")] = False,
    aggregate: Annotated[str | None, typer.Option(help="Pending letters of one aggregate.")] = None,
    reason: Annotated[str, typer.Option(help="Why nothing more is needed (kept with them).")] = "",
) -> None:
    """Close letters without replaying them: they stop counting as pending (and alerting)."""
    settings = settings_of(ctx)
    _one_choice(letter_id, everything, aggregate)
    if not reason.strip():
        fail("say why with --reason TEXT: it stays with the letters for whoever looks next")
    chosen = _chosen(settings, letter_id, everything, aggregate)
    for lt in [lt for lt in chosen if lt.resolved]:  # only a named letter can be closed already
        at = lt.resolved_at.isoformat() if lt.resolved_at else ""
        console.print(f"{lt.id} is closed already: {lt.resolution} at {at}",
                      highlight=False, markup=False)  # fmt: skip
        chosen.remove(lt)
    if not chosen:
        console.print("nothing to discard")
        return
    discard(settings.bootstrap_servers, TopicMap.from_settings(settings).dlq.name, chosen,
            reason.strip())  # fmt: skip
    for lt in chosen:
        console.print(f"discarded {lt.id} ({lt.record['stage']}: {lt.record['reason']})",
                      highlight=False, markup=False)  # fmt: skip


def _one_choice(letter_id: str | None, everything: bool, aggregate: str | None) -> None:
    if sum((letter_id is not None, everything, aggregate is not None)) != 1:
        fail("name exactly one of: a letter id, --all, --aggregate A")


def _chosen(
    settings: Settings, letter_id: str | None, everything: bool, aggregate: str | None
) -> list[Letter]:
    letters = _letters(settings)
    try:
        return select(
            letters, ids=[letter_id] if letter_id else [], everything=everything,
            aggregate=aggregate,
        )  # fmt: skip
    except KeyError as exc:
        fail(f"no dead letter {exc} (see `paybus dlq list`)")
