"""A PSP blip heals by itself: a webhook whose payout look-up failed is replayed by the bus.

One real worker (roles ``web``, ``normaliser``, ``ops``) on the embedded broker, the GoCardless
sandbox behind it. A payment is paid out in the sandbox; its payout's ``payouts.paid`` webhook
is posted to the worker, signed as GoCardless signs it. The sandbox's fault switch answers the
payout look-up (``GET /payouts/PO...``) with 503s: for one normalisation's worth of in-call
retries (the webhook is dead-lettered with a ``retry_at``, replayed by the ops role, and
normalised on the second attempt), or for longer than the test's schedule (``(0.5, 0.5)``):
two automatic replays, then the last letter has no ``retry_at`` and waits for an operator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gocardless_pro
import pytest
from kafka import KafkaConsumer

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox
from streams.admin import create_topics
from streams.auto_replay import REPLAY_ATTEMPT_HEADER
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.dlq_store import Letter, collect, read_dlq
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker
TOKEN, SECRET = "auto_replay_token", "auto_replay_secret"
#: The normaliser's count of an outcome of GoCardless webhooks (``% outcome``).
NORMALISED = (
    'paybus_events_total{aggregate_type="",outcome="%s",source="gocardless",stage="normaliser"}'
)
REPLAYS = 'paybus_dlq_auto_replays_total{outcome="replayed",stage="normaliser"}'
SENT = 'paybus_dead_letters_total{stage="normaliser"}'
PENDING = 'paybus_dlq_pending_letters{stage="normaliser"}'
SCHEDULED = 'paybus_dlq_scheduled_letters{stage="normaliser"}'


@dataclass
class Rig:
    sandbox: RunningSandbox
    client: gocardless_pro.Client
    worker: WorkerProcess
    tm: TopicMap
    bootstrap: str

    def paid_payout(self) -> tuple[str, str, dict[str, Any]]:
        """A payment of a new aggregate paid out in the sandbox: (aggregate id, GoCardless
        payment id, the payout's ``payouts.paid`` event)."""
        aggregate = f"pay-{uuid.uuid4().hex[:8]}"
        customer = self.client.customers.create({"given_name": "Ada", "family_name": "Lovelace"})
        account = self.client.customer_bank_accounts.create({
            "account_number": "55779911", "branch_code": "200000", "country_code": "GB",
            "account_holder_name": "Ada Lovelace", "links": {"customer": customer.id},
        })  # fmt: skip
        mandate = self.client.mandates.create({"links": {"customer_bank_account": account.id}})
        payment = self.client.payments.create({
            "amount": 1500, "currency": "GBP", "links": {"mandate": mandate.id},
            "metadata": {"paybus_aggregate_id": aggregate},
        })  # fmt: skip
        self.sandbox.advance(days=3)
        payout = self.client.payments.get(payment.id).links.payout
        assert payout, "the sandbox paid the payment out"
        [paid] = [
            e.attributes
            for e in self.client.events.list(params={"payout": payout, "limit": 500}).records
            if e.resource_type == "payouts"
        ]
        return aggregate, str(payment.id), dict(paid)

    def failing_payout(self, faults: int) -> tuple[str, str, dict[str, Any], str]:
        """:meth:`paid_payout` whose payout look-up answers the next ``faults`` requests with
        503: (aggregate id, payment id, ``payouts.paid`` event, payout id)."""
        aggregate, payment, paid = self.paid_payout()
        payout = str(paid["links"]["payout"])
        self.sandbox.inject_faults(f"/payouts/{payout}", count=faults)
        return aggregate, payment, paid, payout

    def counts(self) -> dict[str, float]:
        """The metrics these tests read (0 when absent): the module's worker counts both."""
        samples = [NORMALISED % o for o in ("retrying", "exhausted", "rejected")]
        found = {s: self.metric(s) for s in (*samples, REPLAYS, SENT, PENDING)}
        found["injected"] = self.sandbox.faults()["injected"]
        return {name: value or 0.0 for name, value in found.items()}

    def post_webhook(self, event: dict[str, Any]) -> None:
        body = json.dumps({"events": [event], "meta": {"webhook_id": "WB" + event["id"]}}).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.worker.web_port}/webhooks/gocardless", data=body,
            method="POST", headers={"Content-Type": "application/json",
                                    "Webhook-Signature": signature},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

    def letters(self, payout: str) -> list[Letter]:
        """The normaliser's dead letters of ``payout``'s webhook, oldest first."""
        found = collect(read_dlq(self.bootstrap, self.tm.dlq.name)).values()
        mine = [lt for lt in found if payout.encode() == lt.record.get("key")]
        return sorted(mine, key=lambda lt: int(lt.record["original_offset"]))

    def metric(self, sample: str) -> float | None:
        text = self.worker.metrics_text() or ""
        found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None


class Topic:
    """A topic's records (key, headers, value) read from the beginning, accumulating."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100
        )
        self.records: list[Any] = []

    def of(self, key: str) -> list[Any]:
        for batch in self.consumer.poll(200).values():
            self.records += batch
        return [m for m in self.records if m.key == key.encode()]


@pytest.fixture(scope="module")
def rig(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("auto-replay")
    tm = TopicMap(f"ar{uuid.uuid4().hex[:8]}", 8, 1)
    create_topics(broker.bootstrap, tm.all())
    with start_sandbox(token=TOKEN, webhook_secret=SECRET) as sandbox:
        env = paybus_env(
            broker.bootstrap, tm.prefix, tmp,
            PAYBUS_GOCARDLESS__BASE_URL=sandbox.base_url,
            PAYBUS_GOCARDLESS__ACCESS_TOKEN=TOKEN,
            PAYBUS_GOCARDLESS__WEBHOOK_SECRET=SECRET,
            PAYBUS_NORMALISER_RETRY_SCHEDULE_S="[0.5,0.5]",
            PAYBUS_OPS__DLQ_AUTO_REPLAY_INTERVAL_S="0.5",
        )  # fmt: skip
        roles = ("--role", "web", "--role", "normaliser", "--role", "ops")
        worker = WorkerProcess.paybus(env, tmp / "worker.log", *roles).start()
        try:
            worker.wait_ready()
            client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
            yield Rig(sandbox, client, worker, tm, broker.bootstrap)
        finally:
            worker.stop()


def test_a_payout_look_up_that_failed_once_is_replayed_and_normalised(rig: Rig) -> None:
    before = rig.counts()
    # one normalisation's worth of faults: the connector's three in-call attempts
    aggregate, payment, paid, payout = rig.failing_payout(3)
    events = Topic(rig.bootstrap, rig.tm.payment_events.name)
    webhooks = Topic(rig.bootstrap, rig.tm.psp_webhooks.name)
    try:
        rig.post_webhook(paid)
        what = "the payout's event normalised on a replay"
        wait_for(lambda: bool(events.of(aggregate)), 45, f"{what}; log: {rig.worker.log_tail()}")
        assert rig.sandbox.faults() == {"faults": [], "injected": before["injected"] + 3}

        # dead-lettered with a retry_at, then closed by the automatic replay's marker
        wait_for(lambda: bool(rig.letters(payout)) and rig.letters(payout)[0].replayed, 20,
                 "the letter marked replayed")  # fmt: skip
        [letter] = rig.letters(payout)
        record = letter.record
        assert record["stage"] == "normaliser" and record["attempts"] == 1
        assert record["retry_at"] is not None and record["retry_at"] > record["failed_at"]
        assert "503" in record["reason"] and "replayed automatically" in record["reason"]
        assert str(letter.resolution_reason).startswith("replayed automatically to")

        # the replay is the original webhook again, with its count in the header
        original, replayed = webhooks.of(payout)
        assert replayed.value == original.value and replayed.partition == original.partition
        assert (REPLAY_ATTEMPT_HEADER, b"1") in replayed.headers
        assert REPLAY_ATTEMPT_HEADER not in dict(original.headers or [])

        # its event reached paybus.payments.events once, with the settlement date
        codec = AvroCodec()
        [event] = [codec.decode(m.value, "PaymentEvent") for m in events.of(aggregate)]
        assert event["event_id"] == f"{paid['id']}:{payment}"
        assert event["status"] == "paid_out" and event["settlement_date"]

        wait_for(lambda: rig.counts()[REPLAYS] == before[REPLAYS] + 1, 10, "the replay counted")
        after = rig.counts()
        assert after[NORMALISED % "retrying"] == before[NORMALISED % "retrying"] + 1
        # a blip the bus healed asks nothing of a human
        for unmoved in (NORMALISED % "rejected", NORMALISED % "exhausted", SENT, PENDING):
            assert after[unmoved] == before[unmoved], unmoved
    finally:
        events.consumer.close()
        webhooks.consumer.close()


def test_faults_outlasting_the_schedule_leave_the_last_letter_to_an_operator(rig: Rig) -> None:
    before = rig.counts()
    aggregate, _payment, paid, payout = rig.failing_payout(1000)
    events = Topic(rig.bootstrap, rig.tm.payment_events.name)
    try:
        rig.post_webhook(paid)

        def last_is_an_operators() -> bool:
            letters = rig.letters(payout)
            return len(letters) == 3 and letters[-1].record["retry_at"] is None

        what = "two replays, then a letter for an operator"
        wait_for(last_is_an_operators, 45, f"{what}; log: {rig.worker.log_tail()}")
        first, second, last = rig.letters(payout)
        assert [lt.record["attempts"] for lt in (first, second, last)] == [1, 2, 3]
        assert first.replayed and second.replayed and not last.resolved
        assert first.record["retry_at"] and second.record["retry_at"]
        assert "automatic replays used up" in last.record["reason"]

        pending = before[PENDING] + 1
        wait_for(lambda: rig.counts()[PENDING] == pending, 20, "the last letter pending")
        after = rig.counts()
        assert rig.metric(SCHEDULED) == 0.0
        assert after[NORMALISED % "retrying"] == before[NORMALISED % "retrying"] + 2
        assert after[NORMALISED % "exhausted"] == before[NORMALISED % "exhausted"] + 1
        assert after[REPLAYS] == before[REPLAYS] + 2
        assert after[SENT] == before[SENT] + 1  # only the operator's letter
        assert events.of(aggregate) == []
        assert after["injected"] - before["injected"] == 9  # three tries of three calls, no 4th
    finally:
        rig.sandbox.clear_faults()
        events.consumer.close()
