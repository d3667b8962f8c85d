"""The webhook -> CRM latency rows of ``make bench``: which of the repeated runs is reported."""

from __future__ import annotations

from streams.bench.webhook_latency import Run, _median_run


def _run(p99: float) -> Run:
    return Run(1000.0, 999.0, 10, 10, 1.0, p99, p99, 1.0, 4.0, [])


def test_the_latency_row_reports_the_run_with_the_median_p99() -> None:
    runs = [_run(900.0), _run(400.0), _run(600.0)]
    median = _median_run(runs)
    assert median is runs[2] and median.p99s == [900.0, 400.0, 600.0]
    two = [_run(900.0), _run(400.0)]
    assert _median_run(two) is two[0]  # the higher of two: the p99 target is a ceiling
    assert _median_run([_run(500.0)]).p99s == []  # a single run lists nothing
