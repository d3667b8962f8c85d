"""The webhook -> CRM latency rows of ``make bench``: which of the repeated runs is reported,
and what the API-call target leaves of the p99 target."""

from __future__ import annotations

from dataclasses import replace

from streams.bench.hop_floor import write_interval_ms
from streams.bench.hops import Hop
from streams.bench.latency_report import Run, cost_floor_note
from streams.bench.webhook_latency import _median_run


def _run(p99: float) -> Run:
    return Run(1000.0, 999.0, 10, 10, 1.0, p99, p99, 1.0, 4.0, [])


def test_the_latency_row_reports_the_run_with_the_median_p99() -> None:
    runs = [_run(900.0), _run(400.0), _run(600.0)]
    median = _median_run(runs)
    assert median is runs[2] and median.p99s == [900.0, 400.0, 600.0]
    two = [_run(900.0), _run(400.0)]
    assert _median_run(two) is two[0]  # the higher of two: the p99 target is a ceiling
    assert _median_run([_run(500.0)]).p99s == []  # a single run lists nothing


def test_the_call_target_spaces_writes_by_the_rate() -> None:
    assert round(write_interval_ms(1000.0), 1) == 166.7  # 6 calls per 1,000 updates at 1,000/s
    assert round(write_interval_ms(5000.0), 1) == 33.3
    assert write_interval_ms(100.0, calls_per_1000=10.0) == 1000.0


def test_the_floor_note_names_the_gap_and_what_is_left_of_250_ms() -> None:
    bare = cost_floor_note(_run(300.0))
    assert "allow a write every 167 ms at most" in bare and "here" not in bare
    timed = replace(_run(300.0), before_writer=Hop("before_writer", 10, 51.0, 87.0))
    note = cost_floor_note(timed)
    assert "p50 51, p99 87 ms here" in note and "stay under 83 ms" in note


def test_the_floor_note_gives_the_path_floor_measured_in_the_same_run() -> None:
    note = cost_floor_note(_run(300.0), {"path_floor_p99_ms": 217.6})
    assert "come to a p99 of 218 ms before any stage does any work" in note


def test_the_path_floor_is_the_write_wait_plus_three_hops() -> None:
    from streams.bench.hop_floor import path_floor_p99

    # hops of exactly 10 ms: the p99 of 30 ms plus a uniform wait up to 100 ms is about 129
    assert 128.0 <= path_floor_p99([10.0] * 50, 100.0) <= 130.0
    # the slowest hops dominate the tail: one hop in ten at 50 ms lifts it by tens of ms
    slow = path_floor_p99([10.0] * 45 + [50.0] * 5, 100.0)
    assert 165.0 <= slow <= 205.0
    assert path_floor_p99([10.0] * 45 + [50.0] * 5, 100.0) == slow  # seeded: reproducible
