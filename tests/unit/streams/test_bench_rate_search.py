"""The bisection for the highest sustained webhook -> CRM rate (pure: runs are faked)."""

from __future__ import annotations

from streams.bench.latency_report import Run
from streams.bench.rate_search import search, sustained, why_not


def _run(rate: float, *, achieved: float | None = None, p50: float = 200.0,
         tail: float = 210.0, written: int = 100) -> Run:  # fmt: skip
    took = rate if achieved is None else achieved
    return Run(rate, took, 100, written, p50, p50 * 1.5, p50 * 2, tail, 5.0, [])


def test_a_run_is_sustained_only_if_it_took_the_rate_wrote_all_and_did_not_fall_behind() -> None:
    assert sustained(_run(1000.0))
    assert sustained(_run(1000.0, achieved=960.0, p50=30.0, tail=55.0))  # slack at low latency
    short = _run(5000.0, achieved=1673.0)
    assert not sustained(short) and "took 1,673/s of the 5,000/s" in why_not(short)
    lost = _run(1000.0, written=97)
    assert not sustained(lost) and "3 of 100 records" in why_not(lost)
    behind = _run(1800.0, p50=404.0, tail=552.0)  # measured: the backlog grew
    assert not sustained(behind) and "fell behind" in why_not(behind)


def test_search_bisects_towards_the_highest_sustained_rate() -> None:
    limit = 1450.0  # the path keeps up at or below this rate
    asked: list[float] = []

    def measure(rate: float) -> Run:
        asked.append(rate)
        return _run(rate) if rate <= limit else _run(rate, p50=500.0, tail=900.0)

    found = search(measure, 1000.0, 1700.0, steps=3)
    assert asked == [1400.0, 1600.0, 1500.0]
    assert found.tried == [(1400.0, True), (1600.0, False), (1500.0, False)]
    assert found.best is not None and found.best.rate == 1400.0
    assert found.trail() == "1,400/s kept up, 1,600/s did not, 1,500/s did not"


def test_search_stops_when_no_rate_lies_between_the_bounds() -> None:
    def never(rate: float) -> Run:
        raise AssertionError(f"measured {rate}")

    found = search(never, 1000.0, 1040.0, steps=3)
    assert found.best is None and found.tried == [] and found.trail() == ""


def test_search_finds_nothing_when_every_try_falls_behind() -> None:
    found = search(lambda rate: _run(rate, written=0), 1000.0, 1700.0, steps=2)
    assert found.best is None
    assert found.tried == [(1400.0, False), (1200.0, False)]
