"""What every measurement gets: settings, sizes, a scratch directory, progress and results.

Measurements publish their headline figures into :attr:`BenchContext.figures` so later ones
(and the ratio columns) can use baselines taken earlier in the same run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings

Progress = Callable[[float, float | None, str | None], None]


def _silent(completed: float, total: float | None, text: str | None) -> None:
    return None


@dataclass
class Sizes:
    """How much work each measurement does (``--quick`` shrinks all of it)."""

    events: int
    latency_s: float
    memory_aggregates: int
    scale_workers: tuple[int, ...] = (1, 2, 4)
    #: The second rate of the latency runs (the first is 1,000/s).
    high_rate: float = 5000.0
    #: The raw client baselines run at tens of thousands per second: they get enough
    #: records for a window of about a second, whatever the event count.
    raw_records: int = 50_000
    #: Sequencer and Faust-ceiling runs taken back to back for the sequencer's ratio, whose
    #: median is reported: pairs of one build ranged 0.67-1.10 on an idle machine.
    ratio_pairs: int = 5
    #: Runs at 1,000/s of the webhook -> CRM latency, whose median p99 is reported: single
    #: runs of one build gave 404-1,155 ms with the machine's cores all busy.
    latency_repeats: int = 3
    #: One-record batches in the long partition of the broker-history row.
    broker_history: int = 12_000
    #: Tries of the bisection for the highest sustained webhook -> CRM rate, when the high
    #: rate was not sustained (:mod:`streams.bench.rate_search`).
    rate_search_steps: int = 3

    @classmethod
    def for_run(cls, events: int, quick: bool) -> Sizes:
        if quick:
            return cls(
                min(events, 4_000), 3.0, 20_000, (1, 2, 4), ratio_pairs=1, latency_repeats=1,
                broker_history=4_000, rate_search_steps=2,
            )  # fmt: skip
        return cls(events, 10.0, 100_000, (1, 2, 4), raw_records=max(events, 50_000))

    @classmethod
    def tiny(cls) -> Sizes:
        """Just enough to run every measurement end to end (the smoke test)."""
        return cls(
            400, 1.0, 2_000, (1,), high_rate=200.0, raw_records=2_000, ratio_pairs=2,
            latency_repeats=2, broker_history=400, rate_search_steps=1,
        )  # fmt: skip


@dataclass
class BenchContext:
    settings: Settings
    sizes: Sizes
    workdir: Path
    progress: Progress = _silent
    figures: dict[str, float] = field(default_factory=dict)

    def prefix(self, name: str) -> str:
        """A fresh topic prefix (and group id) for one measurement."""
        return f"bench{name}{uuid.uuid4().hex[:6]}"

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
