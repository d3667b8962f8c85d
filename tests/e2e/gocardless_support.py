"""The GoCardless end-to-end rig: embedded broker, GoCardless sandbox, one real worker.

A worker subprocess runs roles ``sequencer,router,connectors,web`` against the sandbox (its
webhooks configured to the worker's ``/webhooks/gocardless``), with its log in a file. The
rig offers what the tests do over and over: register bank details through the SDK, publish
CRM changes, drive the sandbox's clock and webhook delivery (both synchronous, so nothing
here sleeps), read the status topic, and scan raw bytes for a number that must not be there.
One rig serves a whole test module (a worker start and group join cost seconds on two
cores); tests stay independent by using their own aggregates and resetting the webhook
settings they change.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gocardless_pro
from kafka import KafkaConsumer, TopicPartition

from connectors.gocardless import transformers as tf
from connectors.gocardless.sandbox import RunningSandbox, start_sandbox
from streams.admin import create_topics
from streams.bank_details_client import BankDetailsClient
from streams.broker import EmbeddedBroker, free_port
from streams.codec import AvroCodec
from streams.offsets import fetch_highwaters
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

GC_TOKEN = "gc_e2e_access_token"
GC_SECRET = "gc_e2e_webhook_secret"
API_TOKEN = "paybus_e2e_api_token"
ROLES = ("sequencer", "router", "connectors", "normaliser", "web")
#: Webhook settings every test starts from (tests change them and must not leak them).
DEFAULT_WEBHOOKS: dict[str, Any] = {
    "batch_size": 50,
    "shuffle": False,
    "duplicate_rate": 0.0,
    "drop_rate": 0.0,
    "seed": 0,
}


class TopicReader:
    """Decoded records of some topics, read incrementally from the beginning."""

    def __init__(self, bootstrap: str, topics: Mapping[str, str]) -> None:
        self.codec = AvroCodec()
        self.schemas = dict(topics)
        self.consumer = KafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}

    def poll(self) -> None:
        for tp, batch in self.consumer.poll(200).items():
            schema = self.schemas[tp.topic]
            self.records[tp.topic] += [self.codec.decode(m.value, schema) for m in batch]

    def close(self) -> None:
        self.consumer.close()


def raw_topic_bytes(bootstrap: str, prefix: str) -> dict[str, bytes]:
    """Every record (key and value bytes) of every topic named ``prefix*``, all partitions,
    from the beginning to the true end (fetch high-water marks: Tansu's ListOffsets is short
    by the last batch), concatenated per topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        names = sorted(t for t in consumer.topics() if t.startswith(prefix))
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        listed = {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
        ends = asyncio.run(fetch_highwaters(bootstrap, listed))
        chunks: dict[str, list[bytes]] = {name: [] for name in names}
        pending = {tp for tp in tps if ends[(tp.topic, tp.partition)] > 0}

        def done() -> bool:
            for tp, batch in consumer.poll(200, max_records=5000).items():
                for m in batch:
                    chunks[tp.topic].append((m.key or b"") + b"\0" + (m.value or b""))
            for tp in list(pending):
                if consumer.position(tp) >= ends[(tp.topic, tp.partition)]:
                    pending.discard(tp)
            return not pending

        wait_for(done, 60, f"reading every {prefix}* topic to its end", every_s=0)
        return {name: b"\n".join(parts) for name, parts in chunks.items()}
    finally:
        consumer.close()


@dataclass
class GcBus:
    """A running rig; see the module docstring."""

    broker: EmbeddedBroker
    prefix: str
    workdir: Path
    sandbox: RunningSandbox
    sandbox_db: Path
    worker: WorkerProcess
    env: dict[str, str]
    tm: TopicMap
    reader: TopicReader
    gc: gocardless_pro.Client
    codec: AvroCodec = field(default_factory=AvroCodec)

    # --- plumbing ------------------------------------------------------------------------

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.web_url}/webhooks/gocardless"

    def bank_details(self) -> BankDetailsClient:
        return BankDetailsClient(self.web_url, API_TOKEN)

    def reset_webhooks(self, **overrides: Any) -> None:
        """Flush what earlier tests left in the outbox, then apply this test's settings."""
        self.sandbox.configure_webhooks(url=self.webhook_url, secret=GC_SECRET, **DEFAULT_WEBHOOKS)
        self.deliver()
        if overrides:
            self.sandbox.configure_webhooks(**overrides)

    def deliver(self) -> dict[str, Any]:
        """Deliver pending webhooks now; every batch sent must have been accepted (2xx)."""
        report = self.sandbox.deliver_webhooks()
        refused = [b["status"] for b in report["batches"] if not 200 <= (b["status"] or 0) < 300]
        assert not refused, f"webhook batches refused: {refused}: {self.worker.log_tail()}"
        return report

    def sandbox_now(self) -> str:
        now: str = self.sandbox.admin("GET", "/_sandbox/clock")["now"]
        return now

    def metric(self, line_prefix: str) -> float:
        """The value of the first exposition line starting with ``line_prefix`` (0 if none)."""
        for line in (self.worker.metrics_text() or "").splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # --- the bus -------------------------------------------------------------------------

    def publish(self, change: Mapping[str, Any]) -> None:
        with Publisher(self.broker.bootstrap, topic_prefix=self.prefix) as pub:
            pub.publish_crm_change(change)

    def updates(self, aggregate_id: str) -> list[dict[str, Any]]:
        self.reader.poll()
        return [
            u
            for u in self.reader.records[self.tm.status_updates.name]
            if u["aggregate_id"] == aggregate_id
        ]

    def status(self, aggregate_id: str) -> str | None:
        updates = self.updates(aggregate_id)
        return str(updates[-1]["to_status"]) if updates else None

    def wait_status(self, aggregate_id: str, status: str, timeout_s: float = 60) -> dict[str, Any]:
        """Wait until ``aggregate_id`` is at ``status``; return that status update."""
        wait_for(
            lambda: self.status(aggregate_id) == status,
            timeout_s,
            f"{aggregate_id} to reach {status} (now {self.status(aggregate_id)}); "
            f"worker log: {self.worker.log_tail(1500)}",
        )
        return self.updates(aggregate_id)[-1]

    def event_ids_on_bus(self) -> set[str]:
        self.reader.poll()
        return {str(e["event_id"]) for e in self.reader.records[self.tm.payment_events.name]}

    # --- flows ---------------------------------------------------------------------------

    def create_mandate(self, token: str, *, activate: bool = True) -> tuple[str, str]:
        """A ``create_mandate`` change on ``token``; returns (aggregate id, GoCardless id)."""
        aggregate = f"man-{uuid.uuid4().hex[:10]}"
        self.publish(
            {
                "change_id": f"chg-{aggregate}",
                "aggregate_id": aggregate,
                "aggregate_type": "mandate",
                "intent": "create_mandate",
                "occurred_at": datetime.now(UTC),
                "source": "test-crm",
                "payment_method_ref": token,
                "crm_record_id": "a02000000000001AAA",
            }
        )
        created = self.wait_status(aggregate, "pending_submission")
        mandate_id = str(created["psp_object_id"])
        assert mandate_id.startswith("MD"), created
        if activate:
            self.sandbox.advance(days=2)
            self.deliver()
            self.wait_status(aggregate, "active")
        return aggregate, mandate_id

    def payment_change(
        self, mandate_id: str, *, amount: int = 2500, outcome: str | None = None
    ) -> dict[str, Any]:
        aggregate = f"pay-{uuid.uuid4().hex[:10]}"
        change: dict[str, Any] = {
            "change_id": f"chg-{aggregate}",
            "aggregate_id": aggregate,
            "aggregate_type": "payment",
            "intent": "create_payment",
            "occurred_at": datetime.now(UTC),
            "source": "test-crm",
            "amount_minor": amount,
            "currency": "GBP",
            "method": "direct_debit",
            "mandate_ref": mandate_id,
            "crm_record_id": "a01000000000001AAA",
        }
        if outcome:
            change["metadata"] = {"sandbox_outcome": outcome}
        return change

    def active_mandate(self, *, account_number: str = "55779911") -> str:
        """Bank details -> token -> an active mandate; returns its GoCardless id."""
        token, _masked = self.bank_details().register(
            account_holder_name="Ada Lovelace", sort_code="200000", account_number=account_number
        )
        return self.create_mandate(token)[1]

    def true_status(self, payment_id: str) -> str:
        """The sandbox's own status of a payment, mapped as the connector maps it."""
        payment = self.gc.payments.get(payment_id)
        return tf.resource_status("payment", dict(payment.attributes))

    def run_cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """The real ``paybus`` CLI as a subprocess, with the worker's environment."""
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """A raw POST; (status, body) whatever the status."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def gocardless_bus(broker: EmbeddedBroker, workdir: Path) -> Iterator[GcBus]:
    """Start the rig (sandbox on a file database, topics, worker) and tear it down."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    port = free_port()
    db = workdir / "gocardless-sandbox.db"
    sandbox = start_sandbox(
        db_path=str(db),
        token=GC_TOKEN,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/gocardless",
        webhook_secret=GC_SECRET,
        webhook_options=DEFAULT_WEBHOOKS,
    )
    env = paybus_env(
        broker.bootstrap, prefix, workdir / "data",
        PAYBUS_WEB_PORT=str(port),
        PAYBUS_LOG_LEVEL="INFO",
        PAYBUS_GOCARDLESS__BASE_URL=sandbox.base_url,
        PAYBUS_GOCARDLESS__ACCESS_TOKEN=GC_TOKEN,
        PAYBUS_GOCARDLESS__WEBHOOK_SECRET=GC_SECRET,
        PAYBUS_OPS__API_TOKEN=API_TOKEN,
    )  # fmt: skip
    roles = [arg for role in ROLES for arg in ("--role", role)]
    worker = WorkerProcess.paybus(env, workdir / "worker.log", *roles).start()
    reader = TopicReader(
        broker.bootstrap,
        {
            tm.status_updates.name: "StatusUpdate",
            tm.payment_events.name: "PaymentEvent",
            tm.psp_webhooks.name: "PspWebhook",
        },
    )
    gc = gocardless_pro.Client(access_token=GC_TOKEN, base_url=sandbox.base_url)
    try:
        worker.wait_ready()
        yield GcBus(broker, prefix, workdir, sandbox, db, worker, env, tm, reader, gc)
    finally:
        reader.close()
        worker.stop()
        sandbox.stop()


def files_with(needle: bytes, paths: list[Path]) -> list[str]:
    """Which of ``paths`` (files, or every file under a directory) contain ``needle``."""
    found: list[str] = []
    for path in paths:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        found += [str(f) for f in files if f.exists() and needle in f.read_bytes()]
    return found


def sandbox_db_files(db: Path) -> list[Path]:
    """The sandbox's SQLite database with its journal/WAL files, if any."""
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


def json_body(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


__all__ = [
    "API_TOKEN",
    "GC_SECRET",
    "GcBus",
    "files_with",
    "gocardless_bus",
    "json_body",
    "post",
    "raw_topic_bytes",
    "sandbox_db_files",
]
