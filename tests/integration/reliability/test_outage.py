"""The PSP answers 503s (and loses answers) for a while: everything completes after it
recovers, each payment's commands reach the PSP in their original order, and a payment whose
PSP never recovers ends in the DLQ with its error log, from where ``paybus dlq replay``
completes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.dlq_store import collect, read_dlq
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
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
OUTAGE_S = float(os.environ.get("PAYBUS_FAULT_OUTAGE_S", "8"))


def retry_schedule(outage_s: float) -> str:
    """Parked-retry delays doubling from 0.5 s until they span twice the outage: a payment
    must still be retrying when the PSP comes back (the production default spans hours)."""
    delays = [0.5]
    while sum(delays) < 2 * outage_s:
        delays.append(delays[-1] * 2)
    return json.dumps(delays)


def _dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "dlq", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(240 + 3 * OUTAGE_S)
def test_outage_then_recovery_keeps_each_payments_order(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    n = 40
    with gocardless() as (sandbox, proxy, mandate):
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, proxy.base_url,
            PAYBUS_RETRY_SCHEDULE_S=retry_schedule(OUTAGE_S),
        )  # fmt: skip
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
        aggs = [f"pay-{uuid.uuid4().hex[:10]}" for _ in range(n)]
        try:
            worker.wait_ready()
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                # a few go through before the outage, the rest during it
                pub.publish_crm_changes([create_intent(a, mandate) for a in aggs[:5]])
                wait_until(lambda: len(proxy.reached) >= 5, 60, "the first payments")
                proxy.down = True
                outage_started = time.monotonic()
                pub.publish_crm_changes([create_intent(a, mandate) for a in aggs[5:]])
                pub.publish_crm_changes([cancel_intent(a) for a in aggs])
            wait_until(lambda: proxy.refused > 20, 60, "the outage to bite")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            proxy.down = False

            def all_cancelled() -> bool:
                reader.poll()
                by_agg = statuses(reader.records[tm.status_updates.name])
                return all(
                    any(u["to_status"] == "cancelled" for u in by_agg.get(a, {}).values())
                    for a in aggs
                )

            wait_until(all_cancelled, 150 + OUTAGE_S, "every payment cancelled after the outage")
            metrics = worker.metrics_text() or ""
        finally:
            reader.close()
            worker.stop()
        assert proxy.refused > 20
        assert 'paybus_retries_total{outcome="parked"' in metrics
        created = [a for kind, a in proxy.reached if kind == "create"]
        psp_of = {p.metadata.get("paybus_aggregate_id"): p.id for p in payments_at_psp(sandbox)}
        assert sorted(a for a in psp_of if a in aggs) == sorted(aggs)  # one payment each
        assert len([p for p in payments_at_psp(sandbox)]) == n
        for a in aggs:
            first_create = created.index(a)
            cancels = [
                i for i, (k, x) in enumerate(proxy.reached) if k == "cancel" and x == psp_of[a]
            ]
            create_at = [i for i, (k, x) in enumerate(proxy.reached) if k == "create" and x == a]
            assert cancels, f"{a} was never cancelled at the PSP"
            assert create_at[0] < cancels[0], f"{a}: cancel reached the PSP before its create"
            assert first_create >= 0


@pytest.mark.timeout(180)
def test_exhausted_retries_go_to_dlq_and_replay_completes(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    with gocardless() as (sandbox, proxy, mandate):
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, proxy.base_url,
            PAYBUS_RETRY_SCHEDULE_S="[0.2,0.2]",
        )  # fmt: skip
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
        agg = f"pay-{uuid.uuid4().hex[:10]}"
        try:
            worker.wait_ready()
            proxy.down = True
            proxy.lost_every = 10**9  # nothing reaches the PSP
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                pub.publish_crm_change(create_intent(agg, mandate))
                pub.publish_crm_change(cancel_intent(agg))

            def dead_lettered() -> bool:
                return len(collect(read_dlq(broker.bootstrap, tm.dlq.name))) >= 2

            wait_until(dead_lettered, 90, "both commands dead-lettered")
            listing = _dlq(env, "list").stdout
            assert agg in listing
            letters = collect(read_dlq(broker.bootstrap, tm.dlq.name))
            first = min(letters.values(), key=lambda lt: lt.record["original_offset"])
            assert first.record["reason"].startswith("retries exhausted")
            assert first.record["attempts"] == 3
            shown = _dlq(env, "show", first.id)
            assert shown.returncode == 0, shown.stderr
            assert "retries exhausted" in shown.stdout and "attempt 2" in shown.stdout
            assert "behind dead letter" in listing
            assert payments_at_psp(sandbox) == []
            proxy.down = False
            replayed = _dlq(env, "replay", "--aggregate", agg)
            assert replayed.returncode == 0, replayed.stderr
            assert replayed.stdout.count("replayed") == 2

            def cancelled() -> bool:
                reader.poll()
                by_agg = statuses(reader.records[tm.status_updates.name]).get(agg, {})
                return any(u["to_status"] == "cancelled" for u in by_agg.values())

            wait_until(cancelled, 60, "the replayed payment created and cancelled")
            assert len(payments_at_psp(sandbox)) == 1
            again = _dlq(env, "replay", "--aggregate", agg)
            assert "nothing to replay" in again.stdout

            # the whole story, as an operator asks for it: intents, commands, the parked
            # retries and dead letters, the events and statuses, and where it stands now
            story = subprocess.run(
                [sys.executable, "-m", "streams.cli", "trace", agg],
                env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert story.returncode == 0, story.stderr
            for step in ("intent create_payment", "intent cancel", "command create_payment",
                         "command cancel", "parked (retry)", "dead letter (retry)",
                         "event pending_submission", "status cancelled"):  # fmt: skip
                assert step in story.stdout, (step, story.stdout)
            assert f"sequencer: {agg} is cancelled" in story.stdout
            unknown = subprocess.run(
                [sys.executable, "-m", "streams.cli", "trace", "pay-nobody"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert unknown.returncode == 1 and "nothing on the bus is keyed" in unknown.stderr
        finally:
            reader.close()
            worker.stop()
