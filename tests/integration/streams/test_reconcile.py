"""A held event that nothing fills is reconciled against the PSP (the GoCardless sandbox).

A direct debit's events arrive as ``pending_submission`` then ``confirmed``: ``confirmed``
skips the mandatory ``submitted`` stage, so it is held. No ``submitted`` event ever comes; after
the hold timeout the sequencer asks the connector for the payment's status at the PSP and
applies the missing stage as an ``inferred`` transition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import gocardless_pro
import pytest

from connectors.gocardless.sandbox import start_sandbox
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.topics import TopicMap
from tests.integration.streams.test_sequencer_agent import StatusReader, publish_events
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker
TOKEN, SECRET = "reconcile_token", "reconcile_secret"


def _paid_payment(client: gocardless_pro.Client) -> str:
    customer = client.customers.create({"given_name": "Ada", "family_name": "Lovelace"})
    account = client.customer_bank_accounts.create({
        "account_number": "55779911", "branch_code": "200000", "country_code": "GB",
        "account_holder_name": "Ada Lovelace", "links": {"customer": customer.id},
    })  # fmt: skip
    mandate = client.mandates.create({"links": {"customer_bank_account": account.id}})
    payment = client.payments.create(
        {"amount": 1500, "currency": "GBP", "links": {"mandate": mandate.id}}
    )
    return str(payment.id)


def test_held_event_is_reconciled_with_inferred_stages(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    with start_sandbox(token=TOKEN, webhook_secret=SECRET) as sandbox:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        pm = _paid_payment(client)
        for _ in range(4):
            sandbox.advance(steps=1)
        assert client.payments.get(pm).status in ("confirmed", "paid_out")
        env = paybus_env(
            broker.bootstrap, topic_prefix, tmp_path,
            PAYBUS_HOLD_TIMEOUT_S="2",
            PAYBUS_GOCARDLESS__BASE_URL=sandbox.base_url,
            PAYBUS_GOCARDLESS__ACCESS_TOKEN=TOKEN,
            PAYBUS_GOCARDLESS__WEBHOOK_SECRET=SECRET,
        )  # fmt: skip
        worker = WorkerProcess.paybus(env, tmp_path / "w.log", "--role", "sequencer").start()
        reader = StatusReader(broker.bootstrap, tm)
        agg = "pay-reconcile-1"
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        base = {
            "aggregate_id": agg, "aggregate_type": "payment", "source": "gocardless",
            "method": "direct_debit", "psp": "gocardless", "psp_object_id": pm,
        }  # fmt: skip
        try:
            worker.wait_ready()
            publish_events(broker.bootstrap, tm.payment_events.name, [
                {**base, "event_id": "EV1", "status": "pending_submission", "occurred_at": t0},
                {**base, "event_id": "EV3", "status": "confirmed",
                 "occurred_at": t0 + timedelta(minutes=2)},
            ])  # fmt: skip

            def reconciled() -> bool:
                reader.poll()
                return any(u["to_status"] in ("confirmed", "paid_out") for u in reader.updates)

            wait_for(reconciled, 60, "the held event to be reconciled")
            updates = sorted(reader.updates, key=lambda u: int(u["seq"]))
            path = [u["to_status"] for u in updates]
            assert path[:3] == ["pending_submission", "submitted", "confirmed"], path
            inferred = {u["to_status"]: u["inferred"] for u in updates}
            assert inferred["pending_submission"] is False
            assert inferred["submitted"] is True
            metrics = worker.metrics_text() or ""
            assert 'paybus_reconciles_total{result="requested"}' in metrics
            # The look-up is a connector call like any other: in the latency histogram.
            call = 'operation="lookup_status",psp="gocardless"'
            assert f"paybus_connector_call_seconds_count{{{call}}}" in metrics
            assert f'paybus_connector_calls_total{{{call},result="ok"}}' in metrics
        finally:
            reader.close()
            worker.stop()
