"""``paybus dev`` / ``make run``: the whole bus on the embedded default, watched live.

Starts the :class:`~streams.dev.stack.DevStack`, plays the :class:`~streams.dev.scenario.Scenario`
(CRM records -> PSPs -> webhooks shuffled and duplicated -> CRM written back), shows a live
table of the records and the bus's outcome counts, and ends with a summary of whether every CRM
record shows what its PSP shows. ``--once`` exits with that verdict (0 only when everything
matched); otherwise the stack keeps running for exploration until Ctrl-C.

Output that is not a terminal (CI, ``| tee``, a file) gets no live table: a progress line each
time something changes, then the final table once (see :mod:`streams.terminal`). The run's
folder (worker and broker logs, sandbox databases) is in the temp directory; it is removed
after a clean run, and kept, with its path printed, after a failed one or with ``--keep-logs``:
one folder left behind per run added up, while a failure's logs are its evidence.
"""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.table import Table

from streams.dev.guide import Endpoints, explore_lines, ready_lines
from streams.dev.scenario import Row, Scenario
from streams.dev.stack import DevStack
from streams.settings import Settings
from streams.terminal import is_live, make_console

console = make_console()
OUTCOMES = ("applied", "duplicate", "stale", "held", "rejected")


def _metrics_lines(metrics_url: str) -> list[str]:
    """The worker's /metrics, by line (none while it does not answer)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=1) as resp:
            return list(resp.read().decode().splitlines())
    except OSError:
        return []


def outcome_counts(metrics_url: str) -> Counter[str]:
    """Sequencer outcomes and dead letters, read from the worker's /metrics."""
    counts: Counter[str] = Counter()
    for line in _metrics_lines(metrics_url):
        if line.startswith("paybus_events_total{") and 'stage="sequencer"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("paybus_dead_letters_total{"):
            counts["dlq"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def guard_modes(metrics_url: str) -> dict[str, str]:
    """Where each CRM object's version guard lives (``paybus_crm_version_guard``), by object."""
    modes: dict[str, str] = {}
    for line in _metrics_lines(metrics_url):
        if line.startswith("paybus_crm_version_guard{") and float(line.rsplit(" ", 1)[1]) == 1:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            modes[labels.get("object", "?")] = labels.get("mode", "?")
    return modes


def _records_table(rows: list[Row], *, verdict: bool = False) -> Table:
    table = Table(title="CRM records (Salesforce sandbox)" + (" vs PSPs" if verdict else ""))
    for col in ("record", "kind", "gateway", "CRM status", "seq", "PSP id"):
        table.add_column(col)
    if verdict:
        table.add_column("PSP status")
        table.add_column("match")
    for r in rows:
        cells = [
            r.external_id,
            r.label,
            r.gateway,
            r.crm_status or "-",
            str(r.seq),
            r.psp_id or "-",
        ]
        if verdict:
            ok = bool(r.crm_status) and r.crm_status == r.psp_status
            cells += [r.psp_status or "-", "[green]yes[/]" if ok else "[red]no[/]"]
        table.add_row(*cells)
    return table


def _counts_table(counts: Counter[str]) -> Table:
    table = Table(title="sequencer outcomes (all events, webhooks included)")
    for col in (*OUTCOMES, "dlq"):
        table.add_column(col)
    table.add_row(*(str(counts.get(k, 0)) for k in (*OUTCOMES, "dlq")))
    return table


def progress_line(settled: int, total: int, counts: Counter[str]) -> str:
    """One line of plain progress: records in a final status, then the outcome counts."""
    outcomes = " ".join(f"{k} {counts.get(k, 0)}" for k in (*OUTCOMES, "dlq"))
    return f"records final {settled}/{total} | {outcomes}"


class _Display:
    """The story's progress: a live table on a terminal, otherwise a line when it changes."""

    def __init__(self) -> None:
        self.live = Live(console=console, refresh_per_second=4) if is_live(console) else None
        self._last = ""

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def show(self, scenario: Scenario, counts: Counter[str]) -> None:
        rows = list(scenario.rows.values())
        if self.live is not None:
            self.live.update(Group(_records_table(rows), _counts_table(counts)))
            return
        line = progress_line(scenario.settled(), len(rows), counts)
        if line != self._last:
            console.print(line, highlight=False)
            self._last = line


def settle_data_dir(data_dir: Path, *, failed: bool, keep: bool) -> str | None:
    """Remove the run's folder after a clean run; otherwise keep it and say where it is."""
    if failed:
        return f"the run failed; its logs are kept in {data_dir}"
    if keep:
        return f"logs kept in {data_dir}"
    shutil.rmtree(data_dir, ignore_errors=True)
    return None


def run_demo(
    settings: Settings, *, once: bool, timeout_s: float = 240.0, keep_logs: bool = False
) -> int:
    """Run the demo; return 0 when every CRM record matched its PSP (and nothing failed)."""
    data_dir = Path(tempfile.mkdtemp(prefix="paybus-dev-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print("starting: broker, localstripe, GoCardless and Salesforce sandboxes, worker ...")
    stack = DevStack(settings, data_dir, web_port=0 if once else settings.web_port)
    code = 1  # what an exception leaves: a failed run, whose logs are kept
    try:
        code = _play(stack, stop, once=once, timeout_s=timeout_s, keep_logs=keep_logs)
    except KeyboardInterrupt:
        code = 0
    finally:
        stack.stop()
        if (note := settle_data_dir(data_dir, failed=code != 0, keep=keep_logs)) is not None:
            console.print(note, highlight=False)
    return code


def _play(
    stack: DevStack, stop: threading.Event, *, once: bool, timeout_s: float, keep_logs: bool
) -> int:
    stack.start()
    ends = Endpoints.of(stack)
    metrics_url = f"{stack.worker_url}/metrics"
    after = "kept" if keep_logs else "removed after a clean run unless --keep-logs"
    console.print(
        f"worker {stack.worker_url} (log {stack.data_dir / 'worker.log'}; its folder is {after})",
        highlight=False,
    )
    for line in ready_lines(ends):
        console.print(line, highlight=False, markup=False)
    scenario = Scenario(stack)
    scenario.seed()
    deadline = time.monotonic() + timeout_s
    with _Display() as display:
        while not stop.is_set() and time.monotonic() < deadline:
            scenario.step()
            display.show(scenario, outcome_counts(metrics_url))
            if scenario.finished():
                break
            time.sleep(0.5)
    scenario.refresh()
    scenario.psp_statuses()
    console.print(_records_table(list(scenario.rows.values()), verdict=True))
    matched = scenario.finished() and scenario.matched()
    console.print(
        "[green]every CRM record shows what its PSP shows[/]"
        if matched
        else "[red]some CRM records do not match their PSP (see the table)[/]"
    )
    modes = guard_modes(metrics_url)
    console.print(
        "CRM version guard (read / rule / upsert): "
        + (", ".join(f"{obj} {mode}" for obj, mode in sorted(modes.items())) or "not reported")
    )
    if once:
        return 0 if matched else 1
    console.print()
    for line in explore_lines(ends):
        console.print(line, highlight=False, markup=False)
    assert stack.worker is not None
    while not stop.is_set():
        if (gone := stack.worker.exit_message()) is not None:
            console.print(f"the worker stopped: {gone}", highlight=False, markup=False)
            return 1
        stop.wait(0.5)
    return 0 if matched else 1
