"""A connector worker calls its PSP for different payments side by side, up to
``connector_concurrency`` calls in flight, each payment's commands in order, whatever the
partitions: grouped by partition, one partition (or the embedded default's two) meant one
call at a time, and at a PSP's 0.2-1 s a call a worker made a few payments a second.

One worker with every role on topics of one partition, the GoCardless sandbox behind a proxy
that holds each request and counts those in flight. The intents are on Kafka before the
worker starts, so its first batches carry many payments at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
    OutageProxy,
    Reader,
    cancel_intent,
    create_intent,
    gocardless,
    payments_at_psp,
    statuses,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker]

#: The worker's limit, below the payments waiting: the proxy must see exactly this many. Above
#: the 6 threads of the event loop's default pool on 2 cores, which capped it before the
#: connectors had threads of their own.
CONCURRENCY = 7
PAYMENTS = 10
HOLD_S = 0.4


class HoldingProxy(OutageProxy):
    """The outage proxy, holding every request ``HOLD_S`` before forwarding it and counting
    the requests in flight (the most at once in ``most``)."""

    def __init__(self, upstream: str) -> None:
        self.in_flight = 0
        self.most = 0
        self._count = threading.Lock()
        super().__init__(upstream)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._count:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(HOLD_S)
            super()._handle(handler)
        finally:
            with self._count:
                self.in_flight -= 1


@pytest.mark.timeout(120)
def test_payments_are_called_side_by_side_on_one_partition_each_in_order(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 1, 1)
    create_topics(broker.bootstrap, tm.all())
    aggs = [f"pay-{uuid.uuid4().hex[:10]}" for _ in range(PAYMENTS)]
    reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})

    def status_of(agg: str) -> set[str]:
        updates = statuses(reader.records[tm.status_updates.name]).get(agg, {})
        return {u["to_status"] for u in updates.values()}

    def settled() -> bool:
        reader.poll()
        created = all("pending_submission" in status_of(a) for a in aggs[1:])
        return created and "cancelled" in status_of(aggs[0])

    with gocardless() as (sandbox, _direct, mandate):
        proxy = HoldingProxy(sandbox.base_url)
        # a batch's first event waits 0.5 s for company: the router's commands reach the
        # connector in one batch even if they took two produce requests
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, proxy.base_url,
            PAYBUS_PARTITIONS="1", PAYBUS_CONNECTOR_CONCURRENCY=str(CONCURRENCY),
            PAYBUS_BATCH_LINGER_S="0.5",
        )  # fmt: skip
        pub = Publisher(broker.bootstrap, topic_prefix=topic_prefix)
        for agg in aggs:
            pub.publish_crm_change(create_intent(agg, mandate))
        pub.publish_crm_change(cancel_intent(aggs[0]))  # after its create, same key
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        try:
            worker.wait_ready()
            wait_until(settled, 60, "every payment created and the first one cancelled")
            at_psp = {
                str(p.id): (p.metadata or {}).get("paybus_aggregate_id")
                for p in payments_at_psp(sandbox)
            }
        finally:
            worker.stop()
            pub.close()
            reader.close()
            proxy.stop()

    # side by side on one partition, never more than the limit
    assert proxy.most == CONCURRENCY, proxy.most
    # each payment once, and the first one's cancel after its create
    created = [agg for kind, agg in proxy.reached if kind == "create"]
    assert sorted(created) == sorted(aggs)
    cancels = [(i, at_psp[pid]) for i, (kind, pid) in enumerate(proxy.reached)
               if kind == "cancel"]  # fmt: skip
    assert [agg for _, agg in cancels] == [aggs[0]]
    assert proxy.reached.index(("create", aggs[0])) < cancels[0][0]
