"""Repeated client log records: one per kind per window, with the count of those held back."""

from __future__ import annotations

import logging

from streams.log_throttle import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_kind_are_held_back_and_counted_into_the_next_one_let_through() -> None:
    clock = Clock()
    throttle = RepeatFilter(window_s=10, clock=clock)
    passed = []
    for i in range(100):  # ten seconds of an unreachable broker, every 0.1 s
        clock.now = i * 0.1
        record = _record("aiokafka", "Unable connect to node with id %s", 111 + i % 2)
        if throttle.filter(record):
            passed.append(record.getMessage())
    clock.now = 10.5
    later = _record("aiokafka", "Unable connect to node with id %s", 111)
    assert throttle.filter(later)
    assert passed == ["Unable connect to node with id 111"]
    assert later.getMessage() == (
        "Unable connect to node with id 111 [and 99 more like it in the last 10 s]"
    )


def test_kinds_are_told_apart_and_paybus_own_records_always_pass() -> None:
    clock = Clock()
    throttle = RepeatFilter(window_s=10, clock=clock)
    assert throttle.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))
    assert throttle.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))
    assert not throttle.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))
    for _ in range(3):
        assert throttle.filter(_record("streams.agents.webhooks", "webhook not published"))
    assert throttle.filter(_record("kafkaesque.app", "not a client logger"))
    assert throttle.filter(_record("kafkaesque.app", "not a client logger"))


def test_a_kind_quiet_for_a_window_passes_without_a_count() -> None:
    clock = Clock()
    throttle = RepeatFilter(window_s=10, clock=clock)
    first = _record("kafka.cluster", "Metadata refresh failed")
    assert throttle.filter(first)
    clock.now = 30
    again = _record("kafka.cluster", "Metadata refresh failed")
    assert throttle.filter(again)
    assert again.getMessage() == "Metadata refresh failed"
