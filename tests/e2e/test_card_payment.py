"""A CRM change for a card payment, end to end on the embedded broker and localstripe.

CRM change -> router -> Stripe connector worker -> PaymentIntent at (local)Stripe -> its
webhook back through the receiver -> normaliser -> sequencer -> ``StatusUpdate`` confirmed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from kafka import KafkaConsumer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.codec import AvroCodec
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]
API_KEY = "sk_test_paybus_e2e"
SECRET = "whsec_paybus_e2e"


def stripe_rig(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, localstripe: Any, proxy: Any,
    **extra: str,
) -> tuple[TopicMap, dict[str, str], stripe.StripeClient]:  # fmt: skip
    """Topics, a worker environment talking to localstripe (behind the idempotency proxy)
    on a free web port that localstripe's webhooks are sent to, and a Stripe client."""
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    port = free_port()
    env = paybus_env(
        broker.bootstrap, prefix, tmp_path,
        PAYBUS_WEB_PORT=str(port),
        PAYBUS_STRIPE__API_KEY=API_KEY,
        PAYBUS_STRIPE__WEBHOOK_SECRET=SECRET,
        PAYBUS_STRIPE__BASE_URL=proxy.base_url,
        **extra,
    )  # fmt: skip
    localstripe.register_webhook(prefix, f"http://127.0.0.1:{port}/webhooks/stripe", SECRET)
    return tm, env, stripe.StripeClient(API_KEY, base_addresses={"api": proxy.base_url})


class TopicReader:
    """Collects decoded records of some topics."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.codec = AvroCodec()
        self.schemas = topics
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


def test_card_payment_confirmed_through_webhook(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path, localstripe: Any, proxy: Any
) -> None:
    tm, env, client = stripe_rig(broker, topic_prefix, tmp_path, localstripe, proxy)
    customer = client.v1.customers.create(params={"name": "Grace Hopper"}).id
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
    reader = TopicReader(
        broker.bootstrap,
        {
            tm.status_updates.name: "StatusUpdate",
            tm.psp_webhooks.name: "PspWebhook",
            tm.payment_events.name: "PaymentEvent",
        },
    )
    aggregate = f"pay-{uuid.uuid4().hex[:10]}"
    try:
        worker.wait_ready()
        with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
            pub.publish_crm_change({
                "change_id": f"chg-{aggregate}", "aggregate_id": aggregate,
                "aggregate_type": "payment", "intent": "create_payment",
                "occurred_at": datetime.now(UTC), "source": "test-crm", "amount_minor": 2500,
                "currency": "EUR", "method": "card", "customer_ref": customer,
                "payment_method_ref": "pm_card_visa", "crm_record_id": "a01000000000001AAA",
            })  # fmt: skip

        def confirmed_via_webhook() -> bool:
            reader.poll()
            statuses = [
                u for u in reader.records[tm.status_updates.name] if u["aggregate_id"] == aggregate
            ]
            webhook_events = [
                e for e in reader.records[tm.payment_events.name]
                if e["aggregate_id"] == aggregate and e["event_id"].startswith("evt_")
            ]  # fmt: skip
            return any(u["to_status"] == "confirmed" for u in statuses) and bool(webhook_events)

        wait_for(confirmed_via_webhook, 60, "a confirmed status and the webhook's event")
        updates = [
            u for u in reader.records[tm.status_updates.name] if u["aggregate_id"] == aggregate
        ]
        confirmed = [u for u in updates if u["to_status"] == "confirmed"]
        assert len(confirmed) == 1
        assert confirmed[0]["psp"] == "stripe" and confirmed[0]["psp_object_id"].startswith("pi_")
        pi_id = confirmed[0]["psp_object_id"]
        received = [
            w for w in reader.records[tm.psp_webhooks.name]
            if w["psp_object_id"] == pi_id and not w["webhook_id"].startswith("link:")
        ]  # fmt: skip
        assert received, "the PaymentIntent's webhook never came through the receiver"
        assert proxy.created["payment_intents"] == 1
        metrics = worker.metrics_text() or ""
        assert 'paybus_webhooks_total{outcome="accepted",psp="stripe"}' in metrics
    finally:
        reader.close()
        worker.stop()
