"""Poison and bad input: undecodable records go to the DLQ and the records behind them flow;
invalid intents end ``failed`` with the reason; nothing crashes the worker; nothing valid is
lost; ``paybus dlq replay`` with the record fixed completes the aggregate."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import SINGLE_OBJECT_MAGIC, AvroCodec
from streams.dlq_store import collect, read_dlq
from streams.dlq_watch import PENDING
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, wait_for

from .support import Reader, create_intent, gocardless, statuses, wait_until, worker_env

pytestmark = [pytest.mark.broker]


def _dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "dlq", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _pending(worker: WorkerProcess) -> dict[str, float]:
    """``paybus_dlq_pending_letters`` by stage as the worker exports it."""
    families = text_string_to_metric_families(worker.metrics_text() or "")
    return {s.labels["stage"]: s.value for f in families if f.name == PENDING for s in f.samples}


@pytest.mark.timeout(180)
def test_poison_and_bad_input_never_block_or_crash(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    codec = AvroCodec()
    names = ("first", "poison", "behind", "garbled", "negative", "currency", "huge", "last")
    a = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in names}
    with gocardless() as (_sandbox, _proxy, mandate):
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, _sandbox.base_url, PAYBUS_LAG_REFRESH_S="1"
        )
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})

        def avro(name: str, **extra: Any) -> bytes:
            return codec.encode("CrmChange", create_intent(a[name], mandate, **extra))

        fingerprint = avro("first")[2:10]
        poison = json.dumps({**create_intent(a["poison"], mandate), "occurred_at": "now"})
        records = [
            ("first", avro("first")),
            ("poison", poison.encode()),  # JSON where Avro belongs: an upstream bug
            ("behind", avro("behind")),
            ("garbled", SINGLE_OBJECT_MAGIC + fingerprint + b"\xff\xff\xff\xff\xff\x01"),
            ("negative", avro("negative", amount_minor=-100)),
            ("currency", avro("currency", currency="eur")),
            ("huge", avro("huge", description="x" * 300_000)),
            ("last", avro("last")),
        ]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                 max_request_size=2_000_000)  # fmt: skip
        try:
            worker.wait_ready()
            for name, value in records:  # one partition: the poison sits mid-partition
                producer.send(tm.crm_changes.name, key=a[name].encode(), value=value, partition=3)
            producer.flush()

            def settled() -> bool:
                reader.poll()
                by_agg = statuses(reader.records[tm.status_updates.name])
                want = ("first", "behind", "negative", "currency", "huge", "last")
                return all(a[n] in by_agg for n in want)

            wait_until(settled, 90, "every decodable intent to get a status")
            by_agg = statuses(reader.records[tm.status_updates.name])
            status = {n: [u["to_status"] for u in by_agg.get(a[n], {}).values()] for n in a}
            reason = {n: [u.get("reason") for u in by_agg.get(a[n], {}).values()] for n in a}
            for ok in ("first", "behind", "last"):
                assert status[ok] == ["pending_submission"], status
            assert status["negative"] == ["failed"] and "positive" in str(reason["negative"])
            assert status["currency"] == ["failed"] and "ISO 4217" in str(reason["currency"])
            assert status["huge"], "the huge intent was lost"
            assert not status["poison"] and not status["garbled"]

            letters = collect(read_dlq(broker.bootstrap, tm.dlq.name))
            by_aggregate = {lt.record["aggregate_id"]: lt for lt in letters.values()}
            assert {a["poison"], a["garbled"]} <= set(by_aggregate)
            poison_letter = by_aggregate[a["poison"]]
            assert poison_letter.record["stage"] == "decode"
            assert poison_letter.record["original_partition"] == 3
            assert poison_letter.record["value"] == poison.encode()
            assert "undecodable value" in poison_letter.record["reason"]
            assert worker.proc is not None and worker.proc.poll() is None, "the worker died"

            garbled_letter = by_aggregate[a["garbled"]]
            assert {lt.record["stage"] for lt in letters.values()} == {"decode"}
            # the ops role reads the DLQ: every letter is pending until replayed or discarded
            wait_for(lambda: _pending(worker) == {"decode": len(letters)}, 30,
                     f"paybus_dlq_pending_letters to count {len(letters)}")  # fmt: skip

            listing = _dlq(env, "list")
            assert listing.returncode == 0 and poison_letter.id in listing.stdout
            shown = _dlq(env, "show", poison_letter.id)
            assert "not decodable" in shown.stdout and "undecodable value" in shown.stdout
            fixed = {**create_intent(a["poison"], mandate),
                     "occurred_at": int(datetime.now(UTC).timestamp() * 1000)}  # fmt: skip
            (tmp_path / "fixed.json").write_text(json.dumps(fixed))
            out = _dlq(
                env, "replay", poison_letter.id, "--value-json", str(tmp_path / "fixed.json")
            )
            assert out.returncode == 0, out.stderr

            def replayed_completed() -> bool:
                reader.poll()
                return a["poison"] in statuses(reader.records[tm.status_updates.name])

            wait_until(replayed_completed, 60, "the fixed poison record to complete")
            assert collect(read_dlq(broker.bootstrap, tm.dlq.name))[poison_letter.id].replayed
            wait_for(lambda: _pending(worker) == {"decode": len(letters) - 1}, 30,
                     "the replayed letter to stop counting as pending")  # fmt: skip

            # the garbled record cannot be fixed: an operator closes it with a reason
            unexplained = _dlq(env, "discard", garbled_letter.id)
            assert unexplained.returncode != 0 and "--reason" in unexplained.stderr
            out = _dlq(env, "discard", garbled_letter.id, "--reason", "garbled upstream; resent")
            assert out.returncode == 0 and f"discarded {garbled_letter.id}" in out.stdout
            again = _dlq(env, "discard", garbled_letter.id, "--reason", "twice")
            assert again.returncode == 0 and "closed already: discarded" in again.stdout
            closed = collect(read_dlq(broker.bootstrap, tm.dlq.name))[garbled_letter.id]
            assert closed.resolution == "discarded" and not closed.replayed
            assert garbled_letter.id not in _dlq(env, "list", "--pending").stdout
            assert "discarded: garbled upstream; resent" in _dlq(
                env, "show", garbled_letter.id).stdout  # fmt: skip
            wait_for(lambda: _pending(worker) == {"decode": len(letters) - 2}, 30,
                     "the discarded letter to stop counting as pending")  # fmt: skip
            metrics = worker.metrics_text() or ""
            assert "paybus_decode_errors_total" in metrics
            # an undecodable record is an outcome like the others: rejected at the decode stage
            rejected = [
                s.value for f in text_string_to_metric_families(metrics)
                for s in f.samples if s.name == "paybus_events_total"
                and s.labels["stage"] == "decode" and s.labels["outcome"] == "rejected"
            ]  # fmt: skip
            assert rejected == [len(letters)], rejected
        finally:
            producer.close()
            reader.close()
            worker.stop()
