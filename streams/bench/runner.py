"""``paybus bench``: measure the bus against the physical limit on the same machine.

Every figure is taken in one run, each on its own freshly started embedded broker, and the
stage figures are reported as ratios to baselines from that same run (raw aiokafka, Faust's
consume-only ceiling, a plain aiokafka loop with the same rules): these 2-core machines are
shared and noisy, so an absolute rate from another run or another day means little. See
``bench/README.md`` for how to read the table.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from streams.bench import (
    baselines,
    broker_history,
    data,
    hop_floor,
    latency,
    memory,
    report,
    stages,
    webhook_latency,
)
from streams.bench.context import BenchContext, Sizes
from streams.bench.report import Row
from streams.codec import AvroCodec
from streams.settings import PRODUCTION_PARTITIONS, Settings
from streams.terminal import make_console

DEFAULT_EVENTS = 40_000
#: Partitions of the throughput measurements (raw client, Faust ceiling, plain loop, stages,
#: scale) unless PAYBUS_PARTITIONS is set: production's, as the issue's scale rows and every
#: run before the embedded default became 2, so their ratios stay comparable. The latency rows
#: run on the profile's default, what its users get. On Tansu the two pull apart: a backlog
#: drains faster over more partitions (more data per fetch: Faust's ceiling 9,300/s at 8
#: against 6,600-9,400 at 2, the sequencer 7,900-8,200 against 6,300-7,300), live traffic
#: is slower (every fetch names them all: webhook -> CRM p99 280 ms at 8 against 235 at 2).
THROUGHPUT_PARTITIONS = PRODUCTION_PARTITIONS
_QUIET = ("aiokafka", "faust", "mode", "kafka", "asyncio")


def silence_client_loggers() -> None:
    """aiokafka and faust log per message even at warning level; the bench must not pay it."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _Display:
    """Rich progress: one bar for the whole run, one for the current measurement."""

    def __init__(self, console: Console, steps: int) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.overall = self.progress.add_task("paybus bench", total=steps)
        self.current: TaskID | None = None

    def update(self, completed: float, total: float | None, text: str | None) -> None:
        if self.current is None:
            return
        fields: dict[str, object] = {"completed": completed}
        if total is not None:
            fields["total"] = total
        if text is not None:
            fields["description"] = f"  {text}"
        self.progress.update(self.current, **fields)  # type: ignore[arg-type]

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = self.progress.add_task(f"  {name}", total=None)
        try:
            yield
        finally:
            self.progress.remove_task(self.current)
            self.current = None
            self.progress.advance(self.overall)
            self.progress.console.log(f"done: {name}")


def _guarded(
    rows: list[Row], key: str, section: str, unit: str, fn: Callable[[], list[Row]]
) -> None:
    """Run one measurement; a failure becomes an error row and the run goes on."""
    try:
        rows.extend(fn())
    except Exception as exc:
        logging.getLogger(__name__).debug("bench step %s failed", key, exc_info=True)
        rows.append(report.failed(key, section, key.replace("_", " "), unit, exc))


def run(
    settings: Settings, sizes: Sizes, workdir: Path, console: Console
) -> tuple[list[Row], dict[str, float]]:
    """Every measurement, in order (baselines first: the stage ratios need them)."""
    rows: list[Row] = []
    display = _Display(console, steps=11)
    ctx = BenchContext(settings, sizes, workdir, display.update)
    # the same figures: latency notes use the baselines' and the stages' figures
    throughput = replace(ctx, settings=throughput_settings(settings))
    codec = AvroCodec()
    with display.progress:
        with display.step("raw aiokafka produce/consume"):
            _guarded(
                rows,
                "raw",
                baselines.SECTION,
                "records/s",
                lambda: baselines.measure_raw(throughput),
            )
        with display.step("broker: fetch cost of a partition's history"):
            _guarded(
                rows, "broker_history", baselines.SECTION, "ms",
                lambda: broker_history.measure(ctx),
            )  # fmt: skip
        with display.step("broker: one Kafka hop's latency floor"):
            _guarded(rows, "kafka_hop", baselines.SECTION, "ms", lambda: hop_floor.measure(ctx))
        with display.step(f"building {sizes.events:,} events"):
            events = data.shuffled_events(sizes.events)
            workload = data.build_workload(settings, events, codec)
        with display.step("Faust consume-only ceiling"):
            _guarded(
                rows,
                "faust_ceiling",
                baselines.SECTION,
                "events/s",
                lambda: baselines.measure_faust_ceiling(throughput, workload),
            )
        with display.step("plain loop"):
            _guarded(
                rows,
                "plain_loop",
                baselines.SECTION,
                "events/s",
                lambda: baselines.measure_plain_loop(throughput, workload),
            )
        with display.step("stages"):
            for name, fn in stages.STAGES.items():
                if fn is None:
                    rows.append(stages.pending_stage(name))
                    continue
                measure = functools.partial(fn, throughput, workload)
                _guarded(rows, name, stages.SECTION, "events/s", measure)
        with display.step("latency: event -> status update"):
            _guarded(rows, "latency", latency.SECTION, "ms", lambda: latency.measure_latency(ctx))
        with display.step("latency: webhook -> CRM record"):
            _guarded(
                rows, "webhook_latency", latency.SECTION, "ms",
                lambda: webhook_latency.measure(ctx),
            )  # fmt: skip
        with display.step("memory per aggregate"):
            _guarded(rows, "memory", memory.SECTION, "bytes", lambda: memory.measure_memory(ctx))
        with display.step("scale: 1, 2, 4 sequencer workers"):
            _guarded(
                rows,
                "scale",
                stages.SCALE,
                "events/s",
                lambda: stages.measure_scale(throughput, workload),
            )
    return rows, ctx.figures


def throughput_settings(settings: Settings) -> Settings:
    """``settings`` for the throughput measurements: :data:`THROUGHPUT_PARTITIONS`, unless
    the partitions were set (PAYBUS_PARTITIONS), which every measurement but scale takes."""
    if "partitions" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"partitions": THROUGHPUT_PARTITIONS})


def main(
    settings: Settings, *, events: int, quick: bool, out_dir: Path, sizes: Sizes | None = None
) -> int:
    """Run the benchmark, print the table, write the JSON; 0 when every measure ran.

    A target that is missed is a finding, not a failure of the command: the exit status is 1
    only when a measurement could not be taken. ``sizes`` overrides what ``events`` and
    ``quick`` choose (the smoke test runs everything on a tiny input).
    """
    silence_client_loggers()
    console = make_console()  # a log file or CI: wide, plain (streams.terminal)
    sizes = sizes or Sizes.for_run(events, quick)
    started = datetime.now()
    t0 = time.monotonic()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "quick": quick,
        "events": sizes.events,
        "latency_seconds_per_rate": sizes.latency_s,
        "memory_aggregates": sizes.memory_aggregates,
        "scale_workers": list(sizes.scale_workers),
        "partitions": throughput_settings(settings).partitions,
        "latency_partitions": settings.partitions,
        "profile": settings.profile,
        "environment": report.environment(),
    }
    with tempfile.TemporaryDirectory(prefix="paybus-bench-") as tmp:
        rows, figures = run(settings, sizes, Path(tmp), console)
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    meta["figures"] = figures
    title = (
        f"paybus bench — {sizes.events:,} events; partitions: {meta['partitions']} "
        f"(throughput), {settings.partitions} (latency)"
    )
    report.render(rows, console, title + (" (quick)" if quick else ""))
    path = report.write_json(out_dir, started, meta, rows)
    console.print(f"results: {path}  ({meta['duration_s']} s)")
    return 1 if any(r.verdict == "error" for r in rows) else 0


def run_from_argv(argv: list[str]) -> int:
    """``python -m streams.bench.runner [--quick] [EVENTS]``: the benchmark without the CLI.

    Parsed with argparse (``--help`` prints the usage, a bad EVENTS is a usage error, exit 2)
    rather than read from ``sys.argv`` by hand, which turned ``--help`` into a ValueError.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m streams.bench.runner",
        description="paybus bench without the CLI (same run as `paybus bench`).",
    )
    parser.add_argument(
        "events", nargs="?", type=int, default=DEFAULT_EVENTS, help="events per measurement"
    )
    parser.add_argument("--quick", action="store_true", help="small counts: ~2 minutes")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    return main(Settings(), events=args.events, quick=args.quick, out_dir=args.out_dir)


if __name__ == "__main__":
    import sys

    raise SystemExit(run_from_argv(sys.argv[1:]))
