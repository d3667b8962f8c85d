"""Worker subprocesses for the benchmarks: start, wait, poll their counters, read their CPU.

The stages are measured as they run in production — a ``paybus worker`` process — so the
figures include Faust's own overhead. The bench process only observes: it polls the worker's
``/metrics`` page (cheap, a few times a second) and reads the kernel's CPU accounting from
``/proc/<pid>/stat``, so the measurement itself steals as little of the 2 cores as possible.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams import processes
from streams.broker import EmbeddedBroker, free_port
from streams.processes import ChildProcess
from streams.settings import Settings

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_EVENTS_LINE = re.compile(
    r'^paybus_events_total\{[^}]*stage="(?P<stage>[^"]+)"[^}]*\}\s+(?P<v>\S+)'
)
_GAUGE_LINE = re.compile(r"^(?P<name>bench_[a-z_]+)\s+(?P<v>\S+)")


class BenchError(RuntimeError):
    """A measurement could not complete (a worker died, a count never arrived)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces or parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU clock ticks of the whole machine so far, from ``/proc/stat`` (idle and
    I/O wait are not busy); None where there is no such file."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(t) for t in first[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How many of the machine's cores were busy on average between two :func:`machine_ticks`."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` in bytes, from ``/proc/<pid>/statm``."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def worker_env(settings: Settings, bootstrap: str, prefix: str, data_dir: Path) -> dict[str, str]:
    """Environment of one worker: the run's settings, its own topics, group, port, data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYBUS_")}
    env.update(
        PAYBUS_PROFILE=settings.profile,
        PAYBUS_BOOTSTRAP_SERVERS=bootstrap,
        PAYBUS_TOPIC_PREFIX=prefix,
        PAYBUS_APP_ID=f"{prefix}-app",
        PAYBUS_PARTITIONS=str(settings.partitions),
        PAYBUS_DATA_DIR=str(data_dir),
        PAYBUS_WEB_PORT=str(free_port()),
        PAYBUS_LOG_LEVEL="WARNING",
        PAYBUS_SESSION_TIMEOUT_S=str(settings.effective_session_timeout_s),
        PAYBUS_FETCH_MAX_WAIT_MS=str(settings.effective_fetch_max_wait_ms),
        PYTHONUNBUFFERED="1",
    )
    return env


class Worker(ChildProcess):
    """One worker subprocess (log in a file) and what the bench reads from it."""

    @classmethod
    def sequencer(cls, env: Mapping[str, str], log_path: Path) -> Worker:
        """``paybus worker --role sequencer``, exactly as an operator runs it."""
        return cls.role("sequencer", env, log_path)

    @classmethod
    def role(cls, role: str, env: Mapping[str, str], log_path: Path) -> Worker:
        """``paybus worker --role <role>``."""
        args = [sys.executable, "-m", "streams.cli", "worker", "--role", role]
        return cls(args, env, log_path)

    @classmethod
    def module(cls, module: str, env: Mapping[str, str], log_path: Path) -> Worker:
        return cls([sys.executable, "-m", module], env, log_path)

    def check_alive(self) -> None:
        if (gone := self.exit_message()) is not None:
            raise BenchError(f"worker {gone}")

    def counters(self) -> tuple[float, dict[str, float]]:
        """(events judged by any stage, bench_* gauges) from the worker's metrics page."""
        text = self.metrics_text() or ""
        judged = 0.0
        gauges: dict[str, float] = {}
        for line in text.splitlines():
            if m := _EVENTS_LINE.match(line):
                judged += float(m["v"])
            elif m := _GAUGE_LINE.match(line):
                gauges[m["name"]] = float(m["v"])
        return judged, gauges

    def wait_ready(self, timeout_s: float = 90) -> None:
        self.wait_serving(timeout_s, BenchError)


@contextlib.contextmanager
def running(workers: list[Worker]) -> Iterator[list[Worker]]:
    """Start ``workers``, wait until each serves its web page, stop them all at the end."""
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    """Poll ``predicate`` until it holds; raise :class:`BenchError` after ``timeout_s``."""
    processes.wait_for(predicate, timeout_s, what, every_s, error=BenchError)


@dataclass
class CpuTrace:
    """CPU seconds of some workers sampled while they count events.

    The CPU a worker spends starting and joining its group is not the stage's cost: the cost
    per event is taken from the last sample at which nothing was judged yet to the end.
    """

    pids: list[int]
    idle_cpu: float = 0.0
    end_cpu: float = 0.0
    #: Monotonic times of the last poll with nothing judged and of the poll that saw all:
    #: a coarse (one poll interval) cross-check of the record-timestamp window.
    idle_at: float = 0.0
    done_at: float = 0.0

    @property
    def polled_s(self) -> float:
        return max(self.done_at - self.idle_at, 1e-6)

    def total(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)


def start_trace(workers: list[Worker]) -> CpuTrace:
    """A CPU trace of ``workers`` from now: call it before their input is published when they
    already run, so the work they do while it is published is counted."""
    trace = CpuTrace([w.pid for w in workers])
    trace.idle_cpu, trace.idle_at = trace.total(), time.monotonic()
    return trace


def wait_counted(
    workers: list[Worker],
    expected: float,
    timeout_s: float,
    progress: Callable[[float], None] | None = None,
    trace: CpuTrace | None = None,
) -> tuple[CpuTrace, dict[str, float]]:
    """Poll the workers until their judged counters sum to ``expected``; trace their CPU
    (from ``trace``'s start if given, else from now; from the last poll with nothing judged
    if later)."""
    trace = trace or start_trace(workers)
    gauges: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        cpu = trace.total()
        judged = 0.0
        gauges = {}
        for w in workers:
            w.check_alive()
            count, g = w.counters()
            judged += count
            gauges.update(g)
        if judged == 0:
            trace.idle_cpu, trace.idle_at = cpu, time.monotonic()
        if progress is not None:
            progress(judged)
        if judged >= expected:
            trace.end_cpu, trace.done_at = trace.total(), time.monotonic()
            return trace, gauges
        if time.monotonic() > deadline:
            raise BenchError(f"only {judged:.0f} of {expected:.0f} events judged in {timeout_s}s")
        time.sleep(0.25)


@contextlib.contextmanager
def fresh_broker(settings: Settings, log_dir: Path, name: str) -> Iterator[str]:
    """A bootstrap address for one measurement.

    Embedded profile: a freshly started Tansu, so no measurement inherits another's data or
    memory. Production profile: the configured cluster (callers use fresh topic prefixes).
    """
    if settings.profile != "embedded":
        yield settings.bootstrap_servers
        return
    broker = EmbeddedBroker(log_path=log_dir / f"tansu-{name}.log").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def diagnosis(workers: Mapping[str, Worker]) -> str:
    """Per role: how it exited, or the last warning or error its log has (the stack's work
    folder goes with the run, so this is all that is left to say which stage stalled)."""
    said = []
    for role, worker in workers.items():
        gone = worker.exit_message()
        if gone is not None:
            said.append(f"{role}: {gone[-300:]}")
            continue
        lines = [ln for ln in worker.log_tail(20_000).splitlines()
                 if " WARNING " in ln or " ERROR " in ln or " CRITICAL " in ln]  # fmt: skip
        said.append(f"{role}: {lines[-1][-300:] if lines else 'running, log quiet'}")
    return "; ".join(said)
