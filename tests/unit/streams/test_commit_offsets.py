"""What the worker commits: a run of acked offsets only from the committed offset on.

Faust's own rule let a run start one past the committed offset, so a record acked late (the
re-fetched copy of a record after a rebalance) could be committed over before it was done;
under repeated kill -9 that lost intents. The consumer is built by the real app, not started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP

import streams.consumer
from streams.app import PaybusApp, build_app
from streams.settings import Settings

TP0 = TP("unit.paybus.crm.changes", 0)


@pytest.fixture
def consumer() -> Iterator[Any]:
    app: PaybusApp = build_app(Settings(topic_prefix="unit"))
    yield app.consumer


@pytest.fixture
def seeks(consumer: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[TP, int]]:
    """Where the consumer seeks (recorded, not performed)."""
    done: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        done.append((tp, offset))

    monkeypatch.setattr(consumer, "seek", seek)
    return done


def _ack(consumer: Any, *offsets: int) -> None:
    for offset in offsets:
        consumer._acked[TP0].append(offset)
        consumer._acked_index[TP0].add(offset)


def test_a_run_one_past_the_committed_offset_is_not_committed(consumer: Any) -> None:
    consumer._committed_offset[TP0] = 3
    _ack(consumer, 4, 5, 6)
    assert consumer._new_offset(TP0) is None
    _ack(consumer, 3)
    assert consumer._new_offset(TP0) == 7


def test_committed_zero_is_a_base_too(consumer: Any) -> None:
    consumer._committed_offset[TP0] = 0
    _ack(consumer, 2, 3)
    assert consumer._new_offset(TP0) is None
    _ack(consumer, 0, 1)
    assert consumer._new_offset(TP0) == 4


def test_acks_below_the_committed_offset_are_dropped(consumer: Any) -> None:
    consumer._committed_offset[TP0] = 5
    _ack(consumer, 1, 2, 5, 6, 9)
    assert consumer._new_offset(TP0) == 7
    assert list(consumer._acked[TP0]) == [9]
    assert consumer._new_offset(TP0) is None


def test_in_order_runs_commit_as_before(consumer: Any) -> None:
    consumer._committed_offset[TP0] = 10
    _ack(consumer, 10, 11, 12, 14)
    assert consumer._new_offset(TP0) == 13


async def test_a_record_never_delivered_is_read_again(
    consumer: Any, seeks: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer._committed_offset[TP0] = 1
    _ack(consumer, 2, 3)
    assert consumer._new_offset(TP0) is None
    await asyncio.sleep(0)
    assert seeks == []  # not yet: the record may still be on its way
    monkeypatch.setattr(streams.consumer, "GAP_REPAIR_S", 0.0)
    assert consumer._new_offset(TP0) is None
    await asyncio.sleep(0)
    assert seeks == [(TP0, 1)]
    _ack(consumer, 1)  # delivered again and done: the commit moves on
    assert consumer._new_offset(TP0) == 4


async def test_a_partition_with_records_waiting_and_none_done_is_read_again(
    consumer: Any, seeks: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    highwater = {TP0: 1}
    monkeypatch.setattr(consumer, "highwater", highwater.__getitem__)
    monkeypatch.setattr(consumer, "assignment", lambda: {TP0})
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: True)  # a stage's
    consumer._committed_offset[TP0] = 1
    monkeypatch.setattr(streams.consumer, "GAP_REPAIR_S", 0.0)
    assert TP0 in set(consumer._filter_tps_with_pending_acks())  # nothing acked, still looked at
    assert consumer._new_offset(TP0) is None
    await asyncio.sleep(0)
    assert seeks == []  # caught up: nothing waits beyond the committed offset
    highwater[TP0] = 9  # records 1..8 wait and none is done
    assert consumer._new_offset(TP0) is None
    await asyncio.sleep(0)
    assert seeks == [(TP0, 1)]
