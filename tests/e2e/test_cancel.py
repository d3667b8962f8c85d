"""Staff cancel payments end to end on the embedded broker and localstripe.

A ``cancel`` CRM change -> router -> Stripe connector worker. A page payment still waiting for
its customer is cancelled at Stripe and becomes ``cancelled``. One its customer already paid
cannot be: Stripe refuses, and the status update re-asserts ``confirmed`` with the refusal as
its reason (the CRM record, which shows staff's "Cancel Requested", gets its status back);
before, the refusal became ``failed`` (a paid payment shown failed), and then a duplicate
nothing was written for. The PaymentIntents' webhooks reach Kafka without their client
secrets.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.agents.webhooks import ALTERED_HEADER
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.sequencing_state import REFUSED_ATTRIBUTE
from tests.e2e.test_card_payment import TopicReader, stripe_rig
from tests.support.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def _change(aggregate: str, intent: str, **fields: Any) -> dict[str, Any]:
    return {
        "change_id": f"chg-{intent}-{aggregate}", "aggregate_id": aggregate,
        "aggregate_type": "payment", "intent": intent, "occurred_at": datetime.now(UTC),
        "source": "test-crm", "crm_record_id": "a01000000000001AAA", **fields,
    }  # fmt: skip


def test_staff_cancel_a_waiting_payment_and_a_paid_one_is_refused_not_failed(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path, localstripe: Any, proxy: Any
) -> None:
    tm, env, client = stripe_rig(broker, topic_prefix, tmp_path, localstripe, proxy)
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
    reader = TopicReader(
        broker.bootstrap,
        {tm.status_updates.name: "StatusUpdate", tm.psp_webhooks.name: "PspWebhook"},
    )
    waiting, paid = (f"pay-{uuid.uuid4().hex[:10]}" for _ in range(2))

    def updates(aggregate: str) -> list[dict[str, Any]]:
        reader.poll()
        return [u for u in reader.records[tm.status_updates.name] if u["aggregate_id"] == aggregate]

    def last_is(aggregate: str, status: str) -> bool:
        got = updates(aggregate)
        return bool(got) and got[-1]["to_status"] == status

    try:
        worker.wait_ready()
        with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
            for aggregate in (waiting, paid):
                pub.publish_crm_change(
                    _change(aggregate, "request_payment", amount_minor=1500, currency="EUR")
                )
            for aggregate in (waiting, paid):
                wait_for(lambda a=aggregate: last_is(a, "pending_customer_approval"), 60,
                         f"{aggregate} waiting; log: {worker.log_tail()}")  # fmt: skip
            paid_pi = updates(paid)[-1]["psp_object_id"]
            client.v1.payment_intents.update(paid_pi, params={"payment_method": "pm_card_visa"})
            client.v1.payment_intents.confirm(paid_pi)
            wait_for(lambda: last_is(paid, "confirmed"), 60, f"paid; log: {worker.log_tail()}")

            for aggregate in (waiting, paid):
                pub.publish_crm_change(_change(aggregate, "cancel"))
            wait_for(lambda: last_is(waiting, "cancelled"), 60,
                     f"the waiting one cancelled; log: {worker.log_tail()}")  # fmt: skip
            wait_for(lambda: len(updates(paid)) >= 3, 60,
                     f"the refusal reported; log: {worker.log_tail()}")  # fmt: skip

        waiting_pi = updates(waiting)[-1]["psp_object_id"]
        assert client.v1.payment_intents.retrieve(waiting_pi).status == "canceled"
        assert client.v1.payment_intents.retrieve(paid_pi).status == "succeeded"
        history = updates(paid)
        assert [(u["from_status"], u["to_status"]) for u in history] == [
            (None, "pending_customer_approval"),
            ("pending_customer_approval", "confirmed"),
            ("confirmed", "confirmed"),
        ], history
        refusal = history[-1]
        assert refusal["seq"] == 3 and refusal["attributes"][REFUSED_ATTRIBUTE] == "cancel"
        assert refusal["reason"] == "stripe refused the cancel: the payment is already confirmed"
        # Stripe's webhooks carry each PaymentIntent's client secret; Kafka never does.
        webhooks = [
            w for w in reader.records[tm.psp_webhooks.name]
            if w["psp_object_id"] in (paid_pi, waiting_pi)
            and not w["webhook_id"].startswith("link:")
        ]  # fmt: skip
        assert webhooks and all(b"_secret_" not in w["body"] for w in webhooks), webhooks
        altered = {w["headers"].get(ALTERED_HEADER) for w in webhooks}
        assert "client_secret values removed" in altered, altered  # the kept signature: moot
        metrics = worker.metrics_text() or ""
        counted = {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("paybus_events_total{") and 'stage="connector:stripe"' in line
        }
        rejected = 'aggregate_type="payment",outcome="rejected",source="stripe",'
        assert counted.get(rejected + 'stage="connector:stripe"') == 1.0, counted
    finally:
        reader.close()
        worker.stop()
