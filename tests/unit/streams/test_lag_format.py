"""Lag arithmetic, totals and the ``paybus lag`` table: pure, no broker."""

from __future__ import annotations

import pytest
import typer
from kafka import TopicPartition
from rich.console import Console
from typer.testing import CliRunner

from streams.cli import lag_cmd as lag_cli
from streams.cli.common import state_callback
from streams.errors import PaybusError
from streams.lag import (
    PartitionLag,
    compute_lag,
    format_offset,
    format_rows,
    summarize,
    uncommitted,
)

T = "paybus.payments.events"


def tp(partition: int, topic: str = T) -> TopicPartition:
    return TopicPartition(topic, partition)


def test_lag_is_end_minus_committed_per_partition_sorted() -> None:
    rows = compute_lag("g", {tp(1): 7, tp(0): 3}, {tp(1): 10, tp(0): 3})
    assert rows == [
        PartitionLag("g", T, 0, 3, 3, 0),
        PartitionLag("g", T, 1, 7, 10, 3),
    ]


def test_never_committed_partition_has_unknown_lag_without_its_log_start() -> None:
    # OffsetFetch answers -1 for a partition asked about but never committed.
    rows = compute_lag("g", {tp(0): -1}, {tp(0): 5, tp(1): 9})
    assert [(r.partition, r.committed, r.lag) for r in rows] == [(0, None, None), (1, None, None)]


def test_never_committed_partition_lags_by_its_whole_log() -> None:
    # A new group, or a worker stuck on a partition's first record, reads from the log start.
    rows = compute_lag("g", {tp(0): -1, tp(2): 4}, {tp(0): 5, tp(1): 9, tp(2): 6},
                       {tp(0): 0, tp(1): 3})  # fmt: skip
    assert [(r.partition, r.committed, r.lag) for r in rows] == [(0, None, 5), (1, None, 6),
                                                                 (2, 4, 2)]  # fmt: skip
    assert uncommitted([tp(0), tp(1), tp(2)], {tp(0): -1, tp(2): 4}) == [tp(0), tp(1)]


def test_committed_past_the_end_is_zero_lag_not_negative() -> None:
    (row,) = compute_lag("g", {tp(0): 12}, {tp(0): 10})
    assert row.lag == 0


def test_partitions_without_an_end_offset_are_not_invented() -> None:
    assert compute_lag("g", {tp(0): 1, tp(5): 2}, {tp(0): 4}) == [PartitionLag("g", T, 0, 1, 4, 3)]


def test_summary_totals_per_group_and_topic_and_counts_uncommitted() -> None:
    rows = [
        PartitionLag("a", T, 0, 1, 5, 4),
        PartitionLag("a", T, 1, None, 5, None),
        PartitionLag("a", T, 2, None, 7, 7),  # never committed, log start known
        PartitionLag("a", "other", 0, 0, 2, 2),
        PartitionLag("b", T, 0, 9, 10, 1),
    ]
    totals = {(t.group, t.topic): (t.partitions, t.lag, t.uncommitted) for t in summarize(rows)}
    assert totals == {("a", T): (3, 11, 2), ("a", "other"): (1, 2, 0), ("b", T): (1, 1, 0)}


def test_cells() -> None:
    assert format_offset(None) == "-"
    assert format_offset(1234567) == "1,234,567"
    rows = [PartitionLag("g", T, 2, None, 1500, None)]
    assert format_rows(rows) == [("g", T, "2", "-", "1,500", "-")]


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_table_shows_rows_and_totals() -> None:
    rows = [PartitionLag("paybus", T, 0, 10, 25, 15), PartitionLag("paybus", T, 1, 4, 4, 0)]
    text = _text(lag_cli.lag_table(rows, "lag"))
    assert "25" in text and "15" in text
    assert "totals" in text
    assert text.count("paybus.payments.events") == 3  # two partitions + one total line


def test_table_says_so_when_empty() -> None:
    assert "no committed offsets" in _text(lag_cli.lag_table([], "lag"))


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(state_callback)
    app.command("lag")(lag_cli.lag)
    return app


def test_command_prints_the_group_asked_for(
    monkeypatch: pytest.MonkeyPatch, clean_env: object
) -> None:
    asked: list[tuple[str, list[str] | None, str]] = []

    def fake(bootstrap: str, groups: list[str] | None, source: str) -> list[PartitionLag]:
        asked.append((bootstrap, groups, source))
        return [PartitionLag("orders", T, 3, 100, 142, 42)]

    monkeypatch.setattr(lag_cli, "all_lag", fake)
    result = CliRunner().invoke(_cli(), ["-b", "k:9", "lag", "orders"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert asked == [("k:9", ["orders"], "fetch")]
    assert "orders" in result.output and "42" in result.output and "142" in result.output


def test_a_group_with_no_offsets_is_an_error_naming_the_known_groups(
    monkeypatch: pytest.MonkeyPatch, clean_env: object
) -> None:
    monkeypatch.setattr(lag_cli, "all_lag", lambda b, g, s: [])
    monkeypatch.setattr(lag_cli, "list_groups", lambda b: ["paybus", "paybus-web"])
    result = CliRunner().invoke(_cli(), ["-b", "k:9", "lag", "paybsu"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "group 'paybsu' has no committed offsets on k:9 (groups: paybus, paybus-web)" in (
        result.stderr
    )


def test_command_reads_every_group_by_default(
    monkeypatch: pytest.MonkeyPatch, clean_env: object
) -> None:
    asked: list[list[str] | None] = []
    monkeypatch.setattr(lag_cli, "all_lag", lambda b, g, s: asked.append(g) or [])
    result = CliRunner().invoke(_cli(), ["lag", "--source", "list_offsets"])
    assert result.exit_code == 0, result.output
    assert asked == [None]


def test_command_fails_cleanly_when_kafka_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, clean_env: object
) -> None:
    def broken(*_: object) -> list[PartitionLag]:
        raise PaybusError("no fetch answered")

    monkeypatch.setattr(lag_cli, "all_lag", broken)
    result = CliRunner().invoke(_cli(), ["lag"])
    assert result.exit_code == 1
    assert "cannot read lag" in result.output


def test_command_rejects_an_unknown_source(clean_env: object) -> None:
    result = CliRunner().invoke(_cli(), ["lag", "--source", "guess"])
    assert result.exit_code == 1
    assert "--source" in result.output
