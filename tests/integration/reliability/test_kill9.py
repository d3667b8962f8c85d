"""kill -9 a worker at random points while intents flow: every intent yields exactly one PSP
object (counted at the GoCardless sandbox), no status update is lost and none is applied twice.

``PAYBUS_FAULT_INTENTS`` sets the size (default 2,000, the issue's full run is 20,000) and
``PAYBUS_FAULT_KILLS`` the number of kills (default 5).

What this caught: Faust committing offsets of records no stage had finished, across the
rebalances a kill causes (its read-offset skip, an off-by-one in its head-gap check, and a
partition's first records never delivered); see ``streams.consumer._Consumer``.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
    Reader,
    create_intent,
    gocardless,
    payments_at_psp,
    statuses,
    trace_missing,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
INTENTS = int(os.environ.get("PAYBUS_FAULT_INTENTS", "2000"))
KILLS = int(os.environ.get("PAYBUS_FAULT_KILLS", "5"))
ROLES = [a for r in os.environ.get("PAYBUS_FAULT_ROLES", "").split() for a in ("--role", r)]


@pytest.mark.timeout(300 + INTENTS // 10)
def test_kill9_while_intents_flow(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    rng = random.Random(int(os.environ.get("PAYBUS_FAULT_SEED", "7")))
    aggs = [f"pay-{uuid.uuid4().hex[:12]}" for _ in range(INTENTS)]
    with gocardless() as (sandbox, _proxy, mandate):
        env = worker_env(broker.bootstrap, topic_prefix, tmp_path, sandbox.base_url)
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
        log = tmp_path / "worker.log"
        worker = WorkerProcess.paybus(env, log, *ROLES).start()
        started = time.monotonic()
        done_kills = 0
        try:
            worker.wait_ready()
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                chunk = max(1, INTENTS // (KILLS + 1))
                for i in range(0, INTENTS, chunk):
                    pub.publish_crm_changes(
                        [create_intent(a, mandate) for a in aggs[i : i + chunk]]
                    )
                    if done_kills < KILLS:
                        time.sleep(rng.uniform(1.0, 4.0))  # a random point in the flow
                        worker.kill()
                        done_kills += 1
                        worker = WorkerProcess.paybus(env, log, *ROLES).start()
                        worker.wait_ready()
            while done_kills < KILLS:
                time.sleep(rng.uniform(1.0, 4.0))
                worker.kill()
                done_kills += 1
                worker = WorkerProcess.paybus(env, log, *ROLES).start()
                worker.wait_ready()

            def all_pending_submission() -> bool:
                reader.poll()
                by_agg = statuses(reader.records[tm.status_updates.name])
                return sum(1 for a in aggs if a in by_agg) == INTENTS

            try:
                wait_until(all_pending_submission, 120 + INTENTS // 20, "every intent's status", 2)
            except AssertionError as exc:
                reader.poll()
                seen = statuses(reader.records[tm.status_updates.name])
                missing = {a for a in aggs if a not in seen}
                raise AssertionError(
                    f"{exc}: {len(missing)} without status, "
                    f"{len(payments_at_psp(sandbox))} at the PSP; "
                    + _diagnose(broker.bootstrap, tm, env["PAYBUS_APP_ID"], missing, log)
                ) from None
        finally:
            elapsed = time.monotonic() - started
            reader.close()
            worker.stop()
        print(f"{INTENTS} intents, {done_kills} kills: {elapsed:.0f}s")
        assert done_kills >= KILLS
        payments = payments_at_psp(sandbox)
        per_aggregate = Counter(p.metadata.get("paybus_aggregate_id") for p in payments)
        assert len(payments) == INTENTS, f"{len(payments)} PSP payments for {INTENTS} intents"
        assert set(per_aggregate) == set(aggs) and max(per_aggregate.values()) == 1
        by_agg = statuses(reader.records[tm.status_updates.name])
        for a in aggs:
            updates = list(by_agg[a].values())
            # a repeat after a crash carries the same event id and collapses; a second id for
            # one transition would be an update applied twice
            per_status = Counter(u["to_status"] for u in updates)
            assert max(per_status.values()) == 1, f"{a}: {updates}"
            assert sorted(u["seq"] for u in updates) == list(range(1, len(updates) + 1))


def _diagnose(bootstrap: str, tm: TopicMap, group: str, missing: set[str], log: Path) -> str:
    """Where each missing aggregate's records are, and the group's committed offsets on those
    partitions, read to the end of every topic; the worker log is kept for reading."""
    from streams.lag import all_lag

    topics = {tm.crm_changes.name: "CrmChange", tm.commands("gocardless").name:
              "PaymentCommand", tm.payment_events.name: "PaymentEvent",
              tm.status_updates.name: "StatusUpdate", tm.retry.name: "RetryEnvelope",
              tm.dlq.name: "DeadLetter"}  # fmt: skip
    found = trace_missing(bootstrap, topics, missing)
    places = {(t, p) for recs in found.values() for t, p, _ in recs}
    committed = {
        (r.topic, r.partition): (r.committed, r.end)
        for r in all_lag(bootstrap, [group])
        if (r.topic, r.partition) in places
    }
    kept = Path("/tmp") / f"kill9-{log.parent.name}.log"
    kept.write_bytes(log.read_bytes())
    lines = [f"{a}: {found[a]}" for a in sorted(missing)[:20]]
    return f"worker log kept at {kept}; committed/end {committed}; records:\n" + "\n".join(lines)
