"""GoCardless answers 404 to the cancel of a payment it created for paybus: paybus's token is
now another organisation's. The payment has not failed (it is still there, at the account that
made it): the cancel waits parked for the key, as for a refused one, and when the retry
schedule runs out it is dead-lettered with the 404 in its reason. Refused, the 404 turned the
payment ``failed`` in the CRM.

One worker against the GoCardless sandbox through the outage proxy: the payment is created,
then the proxy is pointed at a second sandbox (another organisation, same token), which does
not know it. The cancel carries no PSP id: the worker fills it in from its ``objects`` table,
as for every cancel the CRM asks for.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
    SECRET,
    TOKEN,
    Reader,
    cancel_intent,
    create_intent,
    gocardless,
    metric_sum,
    payments_at_psp,
    statuses,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker]


@pytest.mark.timeout(120)
def test_a_payment_the_psp_does_not_know_waits_for_the_key_and_is_dead_lettered_not_failed(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    agg = f"pay-{uuid.uuid4().hex[:10]}"
    reader = Reader(
        broker.bootstrap, {tm.status_updates.name: "StatusUpdate", tm.dlq.name: "DeadLetter"}
    )

    def status_of() -> set[str]:
        reader.poll()
        updates = statuses(reader.records[tm.status_updates.name]).get(agg, {})
        return {u["to_status"] for u in updates.values()}

    def letters() -> list[dict[str, object]]:
        reader.poll()
        return [r for r in reader.records[tm.dlq.name] if r.get("aggregate_id") == agg]

    with (
        gocardless() as (sandbox, proxy, mandate),
        start_sandbox(token=TOKEN, webhook_secret=SECRET) as elsewhere,
    ):
        # two retries, two seconds apart: long enough to see the cancel wait, short to run out
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, proxy.base_url,
            PAYBUS_RETRY_SCHEDULE_S="[2,2]",
        )  # fmt: skip
        pub = Publisher(broker.bootstrap, topic_prefix=topic_prefix)
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        try:
            worker.wait_ready()
            pub.publish_crm_change(create_intent(agg, mandate))
            wait_until(lambda: "pending_submission" in status_of(), 30, "the payment created")

            proxy.upstream = elsewhere.base_url  # the token is now another organisation's
            pub.publish_crm_change(cancel_intent(agg))

            def waiting_for_the_key() -> bool:
                return metric_sum(worker, "paybus_parked_for_credentials", psp="gocardless") >= 1

            def answered() -> bool:
                parked = metric_sum(worker, "paybus_parked_messages") >= 1
                return parked or "failed" in status_of()

            wait_until(answered, 20, "the cancel parked (or the payment failed)")
            assert "failed" not in status_of(), "the 404 turned the payment failed"
            wait_until(waiting_for_the_key, 5, "the cancel parked as waiting for the key")
            wait_until(lambda: bool(letters()), 30, "the cancel dead-lettered")

            (letter,) = letters()
            assert letter["stage"] == "retry"
            reason = str(letter["reason"])
            assert reason.startswith("retries exhausted: ") and "http_status=404" in reason
            assert f"payments/{_payment_id(sandbox, agg)}" in reason
            # the first call and both retries, each a 404 counted as such
            not_found = metric_sum(
                worker, "paybus_connector_errors_total", operation="cancel", kind="not_found"
            )
            assert not_found >= 3
            assert metric_sum(worker, "paybus_connector_errors_total", kind="permanent") == 0
            assert status_of() == {"pending_submission"}  # not failed, nor anything else
            assert [p.status for p in payments_at_psp(sandbox)] == ["pending_submission"]
        finally:
            worker.stop()
            pub.close()
            reader.close()


def _payment_id(sandbox: RunningSandbox, agg: str) -> str:
    """The GoCardless id of ``agg``'s payment, at the organisation that made it."""
    (payment,) = [
        p for p in payments_at_psp(sandbox) if (p.metadata or {}).get("paybus_aggregate_id") == agg
    ]
    return str(payment.id)
