"""``paybus dev`` / ``make run``: the bus on the embedded default, with demo traffic.

Starts the embedded broker, creates the topics, starts a worker subprocess, publishes a batch
of legal payment, mandate and refund histories delivered shuffled and with duplicates (as PSP
webhooks arrive), and shows a live table of aggregates moving through their statuses with the
outcome counts. It ends with a check that every aggregate reached the status its in-order
history ends in. ``--once`` exits with that verdict; otherwise it keeps running (broker and
worker up, URLs printed) until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.codec import AvroCodec
from streams.demo_data import delivery, final_statuses, histories
from streams.settings import Settings
from streams.topics import TopicMap

console = Console()


def _worker_env(
    settings: Settings, bootstrap: str, web_port: int, data_dir: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYBUS_")}
    env.update(
        PAYBUS_BOOTSTRAP_SERVERS=bootstrap,
        PAYBUS_TOPIC_PREFIX=settings.topic_prefix,
        PAYBUS_APP_ID=settings.app_id,
        PAYBUS_WEB_PORT=str(web_port),
        PAYBUS_WEB_HOST=settings.web_host,
        PAYBUS_DATA_DIR=str(data_dir),
        PAYBUS_PARTITIONS=str(settings.partitions),
    )
    return env


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"worker did not answer on {url} within {timeout_s}s")


def _metric_counts(url: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return counts
    for line in text.splitlines():
        if line.startswith("paybus_events_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] += int(float(value))
        elif line.startswith("paybus_dead_letters_total{"):
            counts["dlq"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def _render(
    latest: dict[str, tuple[int, str]], expected: dict[str, str], counts: Counter[str]
) -> Group:
    table = Table(title="payments on the bus (latest 15 changes)", expand=False)
    for col in ("aggregate", "status", "seq", "expected"):
        table.add_column(col)
    for agg, (seq, status) in list(latest.items())[-15:]:
        ok = status == expected.get(agg)
        table.add_row(
            agg, f"[{'green' if ok else 'yellow'}]{status}[/]", str(seq), expected.get(agg, "?")
        )
    done = sum(1 for agg, want in expected.items() if latest.get(agg, (0, ""))[1] == want)
    summary = Table(show_header=True, title="outcomes")
    for col in ("applied", "duplicate", "stale", "held", "rejected", "dlq", "matched"):
        summary.add_column(col)
    summary.add_row(
        *(
            str(counts.get(k, 0))
            for k in ("applied", "duplicate", "stale", "held", "rejected", "dlq")
        ),
        f"{done}/{len(expected)}",
    )
    return Group(table, summary)


def run_demo(settings: Settings, *, once: bool, payments: int = 40, timeout_s: float = 120) -> int:
    """Run the demo; return the exit status (0 when every aggregate matched)."""
    data_dir = Path(tempfile.mkdtemp(prefix="paybus-dev-"))
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    console.print("starting the embedded broker (Tansu) ...")
    broker.start()
    web_port = settings.web_port if not once else free_port()
    worker: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        tm = TopicMap.from_settings(settings)
        create_topics(broker.bootstrap, tm.all())
        log = open(data_dir / "worker.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=_worker_env(settings, broker.bootstrap, web_port, data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        metrics_url = f"http://{settings.web_host}:{web_port}/metrics"
        console.print(
            f"broker {broker.bootstrap}; worker starting (log: {data_dir / 'worker.log'})"
        )
        _wait_http(metrics_url, worker)
        hist = histories(payments, seed=int(time.time()) % 1000, prefix="demo")
        expected = final_statuses(hist)
        events = list(delivery(hist, seed=1))
        codec = AvroCodec()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        for ev in events:
            producer.send(
                tm.payment_events.name,
                key=ev.aggregate_id.encode(),
                value=codec.encode("PaymentEvent", ev.as_record()),
            )
        producer.flush()
        producer.close()
        console.print(
            f"published {len(events)} events for {len(hist)} aggregates, shuffled with duplicates"
        )
        consumer = KafkaConsumer(
            tm.status_updates.name, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
        )
        latest: dict[str, tuple[int, str]] = {}
        deadline = time.monotonic() + timeout_s
        matched = False
        with Live(
            _render(latest, expected, Counter()), console=console, refresh_per_second=4
        ) as live:
            while not stop.is_set() and time.monotonic() < deadline:
                for batch in consumer.poll(250).values():
                    for msg in batch:
                        upd = codec.decode(msg.value, "StatusUpdate")
                        agg, seq = upd["aggregate_id"], int(upd["seq"])
                        if seq >= latest.get(agg, (0, ""))[0]:
                            latest.pop(agg, None)
                            latest[agg] = (seq, upd["to_status"])
                live.update(_render(latest, expected, _metric_counts(metrics_url)))
                matched = all(latest.get(a, (0, ""))[1] == s for a, s in expected.items())
                if matched:
                    break
        consumer.close()
        verdict = (
            "[green]every aggregate reached its in-order final status[/]"
            if matched
            else "[red]some aggregates did not reach their final status[/]"
        )
        console.print()
        console.print(verdict)
        if once:
            return 0 if matched else 1
        console.print(f"metrics: {metrics_url}\nbroker:  {broker.bootstrap}\nCtrl-C to stop.")
        while not stop.is_set():
            stop.wait(0.5)
        return 0 if matched else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        broker.stop()
