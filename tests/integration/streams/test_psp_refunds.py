"""Objects paybus did not make, through a real receiver, normaliser and sequencer.

A refund made in Stripe's dashboard carries none of paybus's metadata. On a payment the bus
made (the normaliser learnt the PaymentIntent's link from its first webhook) it becomes the
refund aggregate ``stripe-<re id>`` under that payment, and the payment moves to ``refunded``
with Stripe's ``charge.refunded``. Another system's PaymentIntent on the same account, and a
refund of it, are counted ``foreign`` and go no further; a dispute naming no known payment
(a dispute's metadata never says whose it is) is dead-lettered.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.topics import TopicMap
from tests.support import stripe_events as se
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker
SECRET = "whsec_psp_refunds_test"


class Updates:
    """Status updates and dead letters read back as they arrive."""

    def __init__(self, bootstrap: str, tm: TopicMap) -> None:
        self.codec = AvroCodec()
        self.status, self.dlq = tm.status_updates.name, tm.dlq.name
        self.consumer = KafkaConsumer(
            self.status, self.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.updates: list[dict[str, Any]] = []
        self.letters: list[bytes] = []

    def poll(self) -> None:
        for tp, batch in self.consumer.poll(200).items():
            for m in batch:
                if tp.topic == self.status:
                    self.updates.append(self.codec.decode(m.value, "StatusUpdate"))
                else:
                    self.letters.append(m.value)

    def of(self, aggregate_id: str) -> list[dict[str, Any]]:
        self.poll()
        return [u for u in self.updates if u["aggregate_id"] == aggregate_id]


def _post(url: str, evt: dict[str, Any]) -> None:
    body, headers = se.signed(evt, SECRET)
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_dashboard_refund_is_its_own_aggregate_and_an_unknown_one_a_dead_letter(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    env = paybus_env(broker.bootstrap, prefix, tmp_path, PAYBUS_STRIPE__WEBHOOK_SECRET=SECRET)
    roles = ("--role", "web", "--role", "normaliser", "--role", "sequencer")
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", *roles).start()
    read = Updates(broker.bootstrap, tm)
    try:
        worker.wait_ready()
        url = f"http://127.0.0.1:{worker.web_port}/webhooks/stripe"
        pi, payment = "pi_dash1", "pay-dash1"
        intent = se.payment_intent(pi, status="succeeded", aggregate_id=payment)
        _post(url, se.event("payment_intent.succeeded", intent))
        wait_for(lambda: [u["to_status"] for u in read.of(payment)] == ["confirmed"], 60,
                 f"{payment} confirmed; log: {worker.log_tail()}")  # fmt: skip

        refund = se.refund("re_dash1", payment_intent=pi, charge_id="ch_dash1", amount=1500)
        _post(url, se.event("refund.created", refund))
        charge = se.charge("ch_dash1", payment_intent=pi, amount=1500, amount_refunded=1500)
        _post(url, se.event("charge.refunded", charge))
        shop = se.payment_intent("pi_shop", status="succeeded")  # the web shop's, no paybus id
        shop["metadata"] = {"order_id": "shop-1"}
        _post(url, se.event("payment_intent.succeeded", shop))
        stray = se.refund("re_shop", payment_intent="pi_shop", charge_id="ch_shop", amount=9)
        _post(url, se.event("refund.created", stray))
        unknown = se.dispute("dp_unknown", charge_id="ch_unknown", payment_intent="pi_unknown")
        _post(url, se.event("charge.dispute.created", unknown))

        wait_for(lambda: bool(read.of("stripe-re_dash1")), 60,
                 f"the dashboard refund sequenced; log: {worker.log_tail()}")  # fmt: skip
        wait_for(lambda: read.of(payment)[-1]["to_status"] == "refunded", 60, "payment refunded")
        (update,) = read.of("stripe-re_dash1")
        assert update["to_status"] == "refunded"
        assert update["payment_id"] == payment
        assert update["psp_object_id"] == "re_dash1"
        assert not update["crm_record_id"], "the payment's CRM record is not the refund's"
        wait_for(lambda: read.poll() or any(b"dp_unknown" in v for v in read.letters), 60,
                 "the dispute of an unknown payment dead-lettered")  # fmt: skip
        assert len(read.letters) == 1, "only the dispute is dead-lettered"
        metrics = worker.metrics_text() or ""
        line = (
            'paybus_events_total{{aggregate_type="{}",outcome="{}",'
            'source="stripe",stage="normaliser"}}'
        )
        assert line.format("payment", "rejected") + " 1.0" in metrics
        assert line.format("payment", "foreign") + " 1.0" in metrics
        assert line.format("refund", "foreign") + " 1.0" in metrics
        assert line.format("refund", "rejected") not in metrics
        assert not [u for u in read.updates if u["psp_object_id"] in ("pi_shop", "re_shop")]
    finally:
        read.consumer.close()
        worker.stop()
