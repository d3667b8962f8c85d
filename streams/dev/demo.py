"""``paybus dev`` / ``make run``: the whole bus on the embedded default, watched live.

Starts the :class:`~streams.dev.stack.DevStack`, plays the :class:`~streams.dev.scenario.Scenario`
(CRM records -> PSPs -> webhooks shuffled and duplicated -> CRM written back), shows a live
table of the records and the bus's outcome counts, and ends with a summary of whether every CRM
record shows what its PSP shows. ``--once`` exits with that verdict (0 only when everything
matched); otherwise the stack keeps running for exploration until Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streams.dev.scenario import Row, Scenario
from streams.dev.stack import DevStack
from streams.settings import Settings

console = Console()
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


def run_demo(settings: Settings, *, once: bool, timeout_s: float = 240.0) -> int:
    """Run the demo; return 0 when every CRM record matched its PSP."""
    data_dir = Path(tempfile.mkdtemp(prefix="paybus-dev-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print("starting: broker, localstripe, GoCardless and Salesforce sandboxes, worker ...")
    stack = DevStack(settings, data_dir, web_port=0 if once else settings.web_port)
    try:
        stack.start()
        metrics_url = f"{stack.worker_url}/metrics"
        console.print(f"worker {stack.worker_url} (log {data_dir / 'worker.log'})")
        scenario = Scenario(stack)
        scenario.seed()
        deadline = time.monotonic() + timeout_s
        with Live(console=console, refresh_per_second=4) as live:
            while not stop.is_set() and time.monotonic() < deadline:
                scenario.step()
                live.update(
                    Group(
                        _records_table(list(scenario.rows.values())),
                        _counts_table(outcome_counts(metrics_url)),
                    )
                )
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
        console.print(
            f"\nexplore: metrics {metrics_url} | broker {stack.bootstrap} | "
            f"Stripe {stack.localstripe.base_url} | GoCardless {stack.gocardless.base_url} | "
            f"Salesforce {stack.salesforce.instance_url}\nCtrl-C to stop."
        )
        while not stop.is_set():
            stop.wait(0.5)
        return 0 if matched else 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
