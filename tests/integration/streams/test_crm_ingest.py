"""``POST /events/crm`` in a real worker without Salesforce: signed changes in, others out."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from streams.admin import create_topics
from streams.agents.crm_ingest import sign, sign_untimed
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker
SECRET = "crm-ingest-test-secret"


@dataclass
class Ingest:
    worker: WorkerProcess
    consumer: KafkaConsumer
    log_path: Path
    codec: AvroCodec
    seen: list[tuple[int, int, dict[str, Any]]]

    def post(
        self, body: bytes, signature: str | None = "auto", **headers: str
    ) -> tuple[int, dict[str, Any]]:
        sent = {"Content-Type": "application/json", **headers}
        if signature == "auto":
            sent["X-Paybus-Signature"] = sign(SECRET, body)
        elif signature is not None:
            sent["X-Paybus-Signature"] = signature
        url = f"http://127.0.0.1:{self.worker.web_port}/events/crm"
        request = urllib.request.Request(url, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def change_ids(self) -> list[str]:
        for tp, batch in self.consumer.poll(200).items():
            self.seen += [
                (tp.partition, m.offset, self.codec.decode(m.value, "CrmChange")) for m in batch
            ]
        return [str(c["change_id"]) for _, _, c in self.seen]


def change(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "change_id": f"chg-{n}",
        "aggregate_id": f"pay-{n}",
        "aggregate_type": "payment",
        "intent": "create_payment",
        "occurred_at": "2026-03-01T12:00:00Z",
        "source": "crm-push",
        "amount_minor": 1000 + n,
        "currency": "EUR",
        **extra,
    }


@pytest.fixture(scope="module")
def ingest(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    tmp = tmp_path_factory.mktemp("crm-ingest")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    env = paybus_env(
        broker.bootstrap,
        prefix,
        tmp,
        PAYBUS_CRM__INGEST_SECRET=SECRET,
        PAYBUS_CRM__INGEST_MAX_BODY_BYTES="4096",
        PAYBUS_LOG_LEVEL="WARNING",
    )
    log_path = tmp / "worker.log"
    worker = WorkerProcess.paybus(env, log_path, "--role", "crm").start()
    consumer = KafkaConsumer(
        tm.crm_changes.name,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    try:
        worker.wait_ready()
        yield Ingest(worker, consumer, log_path, AvroCodec(), [])
    finally:
        consumer.close()
        worker.stop()


def test_signed_array_is_published_with_where_each_landed(ingest: Ingest) -> None:
    body = json.dumps([change(1), change(2, payment_method_ref="pm_card_visa")]).encode()
    status, answer = ingest.post(body)
    assert status == 202, answer
    assert answer["accepted"] == 2
    placed = {r["change_id"]: (r["partition"], r["offset"]) for r in answer["records"]}
    wait_for(lambda: {"chg-1", "chg-2"} <= set(ingest.change_ids()), 30, "the two changes")
    landed = {c["change_id"]: (p, o) for p, o, c in ingest.seen}
    assert landed["chg-1"] == placed["chg-1"] and landed["chg-2"] == placed["chg-2"]
    record = next(c for _, _, c in ingest.seen if c["change_id"] == "chg-2")
    assert record["amount_minor"] == 1002 and record["payment_method_ref"] == "pm_card_visa"
    # One object (not an array) is accepted too.
    status, answer = ingest.post(json.dumps(change(3)).encode())
    assert status == 202 and answer["accepted"] == 1
    # Without Salesforce the role says so once and runs the ingest anyway.
    log = ingest.log_path.read_text()
    assert log.count("Salesforce not configured") == 1


def test_bad_or_missing_signature_is_401_and_nothing_is_published(ingest: Ingest) -> None:
    body = json.dumps(change(10)).encode()
    assert ingest.post(body, signature=sign("wrong-secret", body))[0] == 401
    assert ingest.post(body, signature=None)[0] == 401
    assert ingest.post(body, signature="sha256=" + "0" * 64)[0] == 401
    # A signature over another body does not cover this one.
    other = json.dumps(change(11)).encode()
    assert ingest.post(body, signature=sign(SECRET, other))[0] == 401
    # A captured request replayed later, and the untimed form, which signs no time.
    replayed = ingest.post(body, signature=sign(SECRET, body, int(time.time()) - 3600))
    assert replayed[0] == 401 and "timestamp" in replayed[1]["error"], replayed
    assert ingest.post(body, signature=sign_untimed(SECRET, body))[0] == 401
    # A good change published after them is on the topic; the refused ones never are.
    assert ingest.post(json.dumps(change(12)).encode())[0] == 202
    wait_for(lambda: "chg-12" in ingest.change_ids(), 30, "the marker change")
    assert "chg-10" not in ingest.change_ids() and "chg-11" not in ingest.change_ids()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (b"{not json", "not JSON"),
        (json.dumps(change(20, colour="red")).encode(), "colour"),
        (json.dumps(change(21, amount_minor="ten")).encode(), "amount_minor"),
        (json.dumps([change(22), change(23, occurred_at="yesterday")]).encode(), "occurred_at"),
        (json.dumps({k: v for k, v in change(24).items() if k != "intent"}).encode(), "intent"),
        (b"[]", "empty"),
    ],
)
def test_malformed_body_is_400_naming_the_field(ingest: Ingest, payload: bytes, named: str) -> None:
    status, answer = ingest.post(payload)
    assert status == 400
    assert named in answer["error"]


def test_a_malformed_record_in_an_array_publishes_none_and_big_bodies_are_413(
    ingest: Ingest,
) -> None:
    status, answer = ingest.post(json.dumps([change(30), change(31, bogus=1)]).encode())
    assert status == 400 and answer["error"].startswith("record 1:")
    big = json.dumps([change(40 + n) for n in range(40)]).encode()
    assert len(big) > 4096
    assert ingest.post(big)[0] == 413
    assert ingest.post(json.dumps(change(99)).encode())[0] == 202
    wait_for(lambda: "chg-99" in ingest.change_ids(), 30, "the marker change")
    ids = ingest.change_ids()
    assert "chg-30" not in ids and "chg-40" not in ids
