"""Shared pieces of the fault tests: the GoCardless sandbox behind an outage proxy that records
the order requests reach it, a worker environment, CRM intents and a status-topic reader."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gocardless_pro
import requests
from kafka import KafkaConsumer

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox
from streams.codec import AvroCodec
from tests.support.workers import WorkerProcess, paybus_env, wait_for

TOKEN = "reliability_token"
SECRET = "reliability_webhook_secret"
_CANCEL = re.compile(r"^/payments/([^/]+)/actions/cancel")


class OutageProxy:
    """Forwards to the sandbox; while ``down`` it answers GoCardless-shaped 503s, and every
    ``lost_every``-th request during the outage is forwarded but its answer replaced by a 503
    (it reached the PSP, the client never heard: what a timeout is). Records, in order, what
    reached the sandbox: ``("create", aggregate_id)`` / ``("cancel", psp_payment_id)``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.down = False
        self.lost_every = 4
        self.refused = 0
        self.reached: list[tuple[str, str]] = []
        self._n = 0
        self._lock = threading.Lock()
        self._session = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _http(self) -> requests.Session:
        if not hasattr(self._session, "s"):
            self._session.s = requests.Session()
        return self._session.s  # type: ignore[no-any-return]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self._n += 1
            down = self.down
            lost = down and self._n % self.lost_every == 0
        if down and not lost:
            with self._lock:
                self.refused += 1
            self._error(handler)
            return
        skip = {"host", "content-length", "connection"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
        with self._lock:  # record and forward as one step: the order is what is asserted
            upstream = self._http().request(
                handler.command, self.upstream + handler.path, data=body, headers=headers
            )
            self._record(handler.command, handler.path, body, upstream.status_code)
        if lost:
            self._error(handler)
            return
        self._reply(handler, upstream.status_code, upstream.content)

    def _record(self, method: str, path: str, body: bytes, status: int) -> None:
        if method != "POST" or status >= 300:
            return
        if path.startswith("/payments") and path.rstrip("/") == "/payments":
            meta = json.loads(body)["payments"].get("metadata") or {}
            self.reached.append(("create", str(meta.get("paybus_aggregate_id"))))
        elif m := _CANCEL.match(path):
            self.reached.append(("cancel", m.group(1)))

    def _error(self, handler: BaseHTTPRequestHandler) -> None:
        error = {"message": "injected outage", "type": "gocardless", "code": 503,
                 "request_id": f"proxy-{uuid.uuid4()}", "errors": []}  # fmt: skip
        self._reply(handler, 503, json.dumps({"error": error}).encode())

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@contextmanager
def gocardless() -> Iterator[tuple[RunningSandbox, OutageProxy, str]]:
    """A sandbox, the proxy in front of it, and a mandate id to collect on."""
    with start_sandbox(token=TOKEN, webhook_secret=SECRET) as sandbox:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        customer = client.customers.create({"given_name": "Ada", "family_name": "Lovelace"})
        account = client.customer_bank_accounts.create({
            "account_number": "55779911", "branch_code": "200000", "country_code": "GB",
            "account_holder_name": "Ada Lovelace", "links": {"customer": customer.id},
        })  # fmt: skip
        mandate = client.mandates.create({"links": {"customer_bank_account": account.id}})
        proxy = OutageProxy(sandbox.base_url)
        try:
            yield sandbox, proxy, mandate.id
        finally:
            proxy.stop()


def payments_at_psp(sandbox: RunningSandbox) -> list[Any]:
    client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
    return list(client.payments.all(params={"limit": 500}))


def worker_env(
    bootstrap: str, prefix: str, data_dir: Path, gc_url: str, **extra: str
) -> dict[str, str]:
    settings = {
        "PAYBUS_GOCARDLESS__ACCESS_TOKEN": TOKEN, "PAYBUS_GOCARDLESS__WEBHOOK_SECRET": SECRET,
        "PAYBUS_GOCARDLESS__BASE_URL": gc_url, "PAYBUS_RETRY_SCHEDULE_S": "[0.5,1,2]",
        "PAYBUS_CRM__POLL": "false",
        "PAYBUS_LOG_LEVEL": os.environ.get("PAYBUS_FAULT_LOG_LEVEL", "WARNING"), **extra,
    }  # fmt: skip
    return paybus_env(bootstrap, prefix, data_dir, **settings)


def create_intent(aggregate: str, mandate: str, **extra: Any) -> dict[str, Any]:
    return {
        "change_id": f"chg-{aggregate}", "aggregate_id": aggregate, "aggregate_type": "payment",
        "intent": "create_payment", "occurred_at": datetime.now(UTC), "source": "test-crm",
        "amount_minor": 1500, "currency": "GBP", "method": "direct_debit",
        "mandate_ref": mandate, **extra,
    }  # fmt: skip


def cancel_intent(aggregate: str) -> dict[str, Any]:
    return {
        "change_id": f"cnl-{aggregate}", "aggregate_id": aggregate, "aggregate_type": "payment",
        "intent": "cancel", "occurred_at": datetime.now(UTC), "source": "test-crm",
    }  # fmt: skip


class Reader:
    """Decoded records of some topics, accumulated by ``poll``."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.codec = AvroCodec()
        self.schemas = topics
        self.consumer = KafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )  # fmt: skip
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}

    def poll(self) -> None:
        for _ in range(20):
            polled = self.consumer.poll(100, max_records=5000)
            if not polled:
                return
            for tp, batch in polled.items():
                schema = self.schemas[tp.topic]
                self.records[tp.topic] += [self.codec.decode(m.value, schema) for m in batch]

    def close(self) -> None:
        self.consumer.close()


def statuses(updates: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """aggregate -> event id -> update (repeats of one update collapse)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for u in updates:
        out.setdefault(u["aggregate_id"], {})[u["event_id"]] = u
    return out


def wait_until(predicate: Any, timeout_s: float, what: str, every_s: float = 0.5) -> None:
    wait_for(predicate, timeout_s, what, every_s)


def trace_missing(
    bootstrap: str, topics: dict[str, str], missing: set[str], *, quiet_s: float = 3.0
) -> dict[str, list[tuple[str, int, int]]]:
    """Where the records of ``missing`` aggregates are: aggregate -> [(topic, partition,
    offset)], read by a fresh consumer to the end of every topic (until ``quiet_s`` without a
    new record), so a slow reader is not mistaken for a lost record."""
    codec = AvroCodec()
    consumer = KafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )  # fmt: skip
    found: dict[str, list[tuple[str, int, int]]] = {a: [] for a in missing}
    last_new = time.monotonic()
    try:
        while time.monotonic() - last_new < quiet_s:
            polled = consumer.poll(200, max_records=5000)
            if polled:
                last_new = time.monotonic()
            for tp, batch in polled.items():
                for m in batch:
                    rec = codec.decode(m.value, topics[tp.topic])
                    agg = rec.get("aggregate_id")
                    if agg in found:
                        found[agg].append((tp.topic, tp.partition, m.offset))
    finally:
        consumer.close()
    return found


def metric_sum(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in (worker.metrics_text() or "").splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
