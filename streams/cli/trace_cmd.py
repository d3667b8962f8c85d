"""``paybus trace ID``: one payment's (or mandate's) story across the bus, as the bus wrote it.

The question an operator gets asked most, "where is this payment?", answered from Kafka
itself: the intent from the CRM, the command to the PSP, the PSP's webhooks, the events, each
status written back, retries, dead letters, and what the sequencer holds now (see
:mod:`streams.trace`). Refunds share their payment's key; an id no record is keyed by (a PSP
object id, a refund's id) is looked up in the records that name it (:mod:`streams.trace_owner`)
and its payment's story told.
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
    from streams.codec import AvroCodec
    from streams.trace import Step, Trace


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)


def trace_cmd(
    ctx: typer.Context,
    key: Annotated[
        str,
        typer.Argument(
            help="The payment (or mandate) id: the records' key; or a PSP object or refund id."
        ),
    ],
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

    if not key.strip():  # every record's bytes hold the empty string: any payment would do
        fail("give the id to trace: a payment, mandate, refund or PSP object id", code=2)
    settings = settings_of(ctx)
    topics = TopicMap.from_settings(settings)
    state_topic = f"{app_id or settings.app_id}-sequencer-state-changelog"
    codec = build_avro_codec(settings)
    try:
        with console.status(f"reading what the bus holds about {escape(key)}"):
            found = trace(settings.bootstrap_servers, topics, key, codec,
                          state_topic=state_topic, timeout_s=timeout)  # fmt: skip
    except KafkaError as exc:
        fail(f"cannot read the bus at {settings.bootstrap_servers}: {exc}")
    if not found.states and all(step.topic == topics.dlq.name for step in found.steps):
        # Nothing keyed: at most dead letters naming the id (a webhook the normaliser could
        # not map, keyed by its PSP object id), which belong in the owner's story, not instead.
        found, key = _owners_story(settings.bootstrap_servers, topics, key, codec, state_topic,
                                   timeout, found)  # fmt: skip
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


def _owners_story(
    bootstrap: str, topics: TopicMap, wanted: str, codec: AvroCodec, state_topic: str,
    timeout: float, letters: Trace,
) -> tuple[Trace, str]:  # fmt: skip
    """The story of the payment (or mandate) whose records name ``wanted`` (a PSP object id,
    a refund's id), when no record is keyed by it, with the dead letters ``letters`` found
    naming ``wanted``; those alone when no record names it; exits 1 when nothing does."""
    from streams.trace import trace
    from streams.trace_owner import owner_of

    try:
        with console.status(f"nothing is keyed {escape(wanted)}: searching records naming it"):
            owner, unread = owner_of(bootstrap, topics, wanted, codec, timeout_s=timeout)
            if owner is not None:
                found = trace(bootstrap, topics, owner.key, codec, state_topic=state_topic,
                              timeout_s=timeout)  # fmt: skip
    except KafkaError as exc:
        fail(f"cannot read the bus at {bootstrap}: {exc}")
    if owner is None and letters.steps:
        return letters, wanted
    if owner is None:
        searched = "; not fully searched: " + "; ".join(
            f"{name}: {why}" for name, why in sorted(unread.items())
        ) if unread else ""  # fmt: skip
        fail(f"nothing on the bus is keyed {wanted!r} or names it as a PSP object, payment, "
             f"refund or mandate{searched}")  # fmt: skip
    console.print(f"{wanted} is {owner.what}: the story of {owner.key}", highlight=False,
                  markup=False)  # fmt: skip
    found.steps = _merged(found.steps, letters.steps)
    return found, owner.key


def _merged(steps: list[Step], more: list[Step]) -> list[Step]:
    """``steps`` with those of ``more`` they do not have, in story order."""
    from streams.trace import story_order

    have = {(s.topic, s.offset, s.summary) for s in steps}
    return story_order([*steps, *(s for s in more if (s.topic, s.offset, s.summary) not in have)])


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
