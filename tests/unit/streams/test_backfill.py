"""Backfill's pure parts and the ``paybus backfill`` command against a fake connector."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.backfill import (
    event_record,
    key_of,
    parse_since,
    run_backfill,
    scheduled_since,
)
from streams.codec import AvroCodec
from streams.records import PaymentEvent

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def _event(event_id: str, aggregate_id: str, status: str = "submitted", **kw: Any) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id,
        aggregate_id=aggregate_id,
        aggregate_type=kw.pop("aggregate_type", "payment"),
        status=status,
        occurred_at=NOW,
        source="gocardless",
        psp="gocardless",
        psp_object_id=kw.pop("psp_object_id", "PM1"),
        **kw,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250z", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("6h", NOW - timedelta(hours=6)),
        ("2d", NOW - timedelta(days=2)),
        ("90m", NOW - timedelta(minutes=90)),
    ],
)
def test_parse_since_accepts_rfc3339_and_spans(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["2024-05-01T12:00:00", "yesterday", "6 hours", ""])
def test_parse_since_refuses_naive_or_unknown(text: str) -> None:
    with pytest.raises(ValueError, match="since"):
        parse_since(text, NOW)


def test_scheduled_since_overlaps_one_interval_before_the_last_run() -> None:
    assert scheduled_since(None, NOW, 300) == NOW - timedelta(seconds=600)
    last = NOW - timedelta(seconds=310)
    assert scheduled_since(last, NOW, 300) == last - timedelta(seconds=300)


def test_key_of_uses_the_payment_for_refunds_and_none_without_aggregate() -> None:
    assert key_of(_event("e1", "pay-1")) == "pay-1"
    refund = _event("e2", "ref-1", "refunded", aggregate_type="refund", payment_id="pay-1")
    assert key_of(refund) == "pay-1"
    assert key_of(_event("e3", "")) is None


def test_run_backfill_publishes_resolved_and_reports_unresolved() -> None:
    sent: list[tuple[str, str]] = []
    seen: list[int] = []
    events = [
        _event("e1", "pay-1", "submitted"),
        _event("e2", "", "confirmed", psp_object_id="PM9"),
        _event("e3", "pay-1", "confirmed"),
        _event("e4", "man-1", "active", aggregate_type="mandate"),
    ]
    report = run_backfill(
        "gocardless",
        NOW,
        events,
        lambda key, e: sent.append((key, e.event_id)),
        on_event=lambda r: seen.append(r.read_total),
    )
    assert sent == [("pay-1", "e1"), ("pay-1", "e3"), ("man-1", "e4")]
    assert [e.event_id for e in report.unresolved] == ["e2"]
    assert report.published_total == 3 and report.read_total == 4 and seen == [1, 2, 3, 4]
    assert report.rows() == [
        ("mandate", "active", 1, 0),
        ("payment", "confirmed", 1, 1),
        ("payment", "submitted", 1, 0),
    ]


def test_event_record_encodes_as_avro() -> None:
    codec = AvroCodec()
    event = _event("e1", "pay-1")
    decoded = codec.decode(codec.encode("PaymentEvent", event_record(event)), "PaymentEvent")
    assert decoded["event_id"] == "e1" and decoded["attributes"] == {}


class _FakeConnector:
    name = "fake"

    def __init__(self, events: list[PaymentEvent]) -> None:
        self.events = events
        self.since: datetime | None = None

    def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
        self.since = since
        yield from self.events


def _cli(monkeypatch: pytest.MonkeyPatch, connector: Any, *args: str) -> Any:
    from connectors import registry
    from streams.cli import app

    monkeypatch.setattr(registry, "load", lambda name, settings: connector)
    return CliRunner().invoke(app, ["backfill", *args])


def test_cli_dry_run_counts_and_lists_unresolved(
    monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    fake = _FakeConnector([_event("e1", "pay-1"), _event("EVX", "", psp_object_id="PMX")])
    result = _cli(monkeypatch, fake, "fake", "--since", "2024-05-01T00:00:00Z", "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.since == datetime(2024, 5, 1, tzinfo=UTC)
    assert "would publish 1, unresolved 1" in result.output
    assert "EVX" in result.output and "PMX" in result.output


def test_cli_refuses_a_naive_since(monkeypatch: pytest.MonkeyPatch, clean_env: Any) -> None:
    result = _cli(monkeypatch, _FakeConnector([]), "fake", "--since", "2024-05-01T00:00:00")
    assert result.exit_code == 2 and "offset" in result.output


def test_cli_reports_a_connector_without_backfill(
    monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    class NoLog:
        def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
            raise NotImplementedError("no log")

    result = _cli(monkeypatch, NoLog(), "fake", "--since", "1h", "--dry-run")
    assert result.exit_code == 2 and "no event log" in result.output


def test_cli_help_names_exactly_the_connectors_that_can_backfill() -> None:
    import typer

    from connectors import registry
    from connectors.base import supports_backfill
    from streams.cli import app

    command = typer.main.get_command(app).commands["backfill"]  # type: ignore[attr-defined]
    help_text = next(p.help for p in command.params if p.name == "psp")
    for name in registry.available():
        named = name in help_text
        # a connector class is enough to ask: supports_backfill looks at the type
        able = supports_backfill(object.__new__(registry.connector_class(name)))
        assert named == able, f"help {'names' if named else 'omits'} {name}: {help_text!r}"


def test_cli_refuses_a_connector_without_backfill_before_connecting_to_kafka(
    monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    import kafka

    from connectors.base import PspConnector

    class NoLog(PspConnector):  # inherits the base backfill: no event log
        name = "nolog"

    NoLog.__abstractmethods__ = frozenset()
    producers: list[Any] = []
    monkeypatch.setattr(kafka, "KafkaProducer", lambda **kw: producers.append(kw))
    result = _cli(monkeypatch, object.__new__(NoLog), "nolog", "--since", "1h")
    assert result.exit_code == 2 and "nolog has no event log" in result.output
    assert producers == []


# --- the scheduled stage -------------------------------------------------------------------


class _FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, key: str, value: PaymentEvent) -> Any:
        import asyncio

        self.sent.append((key, value.event_id))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _stage(clean_env: Any, clock: Any, interval: float | None = 60.0) -> Any:
    from streams.agents.backfill import BackfillStage
    from streams.app import build_app
    from streams.settings import OpsSettings, Settings

    settings = Settings(data_dir=clean_env / "data", ops=OpsSettings(backfill_interval_s=interval))
    stage: Any = BackfillStage(build_app(settings), ["fake"], clock=clock)
    stage.events_topic = _FakeTopic()
    return stage


def test_stage_publishes_and_moves_its_window(clean_env: Any) -> None:
    import asyncio

    times = iter([NOW, NOW + timedelta(seconds=60)])
    stage = _stage(clean_env, lambda: next(times))
    fake = _FakeConnector([_event("e1", "pay-1"), _event("EVX", "")])
    stage.connectors._cache["fake"] = fake
    report = asyncio.run(stage.run_once("fake"))
    assert fake.since == NOW - timedelta(seconds=120)
    assert stage.events_topic.sent == [("pay-1", "e1")] and len(report.unresolved) == 1
    asyncio.run(stage.run_once("fake"))
    assert fake.since == NOW - timedelta(seconds=60)  # one interval before the last start


def test_stage_keeps_its_window_after_a_failure_and_skips_unsupported(clean_env: Any) -> None:
    import asyncio

    from connectors.errors import TransientError

    stage = _stage(clean_env, lambda: NOW)

    class Failing:
        def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
            raise TransientError("gocardless unreachable")

    stage.connectors._cache["fake"] = Failing()
    assert asyncio.run(stage.run_once("fake")) is None and "fake" not in stage.last_start

    class NoLog:
        def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
            raise NotImplementedError

    stage.connectors._cache["fake"] = NoLog()
    asyncio.run(stage.tick())
    assert stage.unsupported == {"fake"}


def test_stage_attaches_its_timer_only_with_an_interval(clean_env: Any) -> None:
    def timers(stage: Any) -> list[Any]:
        return [t for t in stage.app._app_tasks if t.__qualname__ == "BackfillStage.tick"]

    assert timers(_stage(clean_env, lambda: NOW, interval=None)) == []
    assert len(timers(_stage(clean_env, lambda: NOW, interval=30.0))) == 1
