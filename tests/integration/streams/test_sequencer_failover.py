"""10,000 aggregates through two sequencing workers, one of them killed -9 mid-run.

The final states read back from ``paybus.payments.status`` must equal what ``paybus sequence``
computes offline for the same input, and no event may be applied twice: every status update
carrying one event id is the same update (same seq, same transition) — a re-emission after the
crash, never a second application.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.demo_data import delivery, histories
from streams.offline import run_sequence
from streams.topics import TopicMap
from tests.integration.streams.test_sequencer_agent import StatusReader, publish_events
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(600)]

AGGREGATES = 10_000


def _offline_finals(lines: list[str]) -> dict[str, str]:
    out, err = io.StringIO(), io.StringIO()
    assert run_sequence(lines, out, err) == 0, err.getvalue()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return {r["aggregate_id"]: r["status"] for r in records if r["type"] == "final"}


def test_two_workers_one_killed_match_offline(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    events = list(delivery(histories(AGGREGATES, seed=21), seed=22, duplicate_rate=0.2))
    expected = _offline_finals([json.dumps(e.as_json()) for e in events])
    assert len(expected) == AGGREGATES

    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str) -> WorkerProcess:
        # A port the kernel just handed out, not a random one: 20000-40000 overlaps the
        # ephemeral range, where the workers' own broker connections may already sit.
        worker_env = {**env, "PAYBUS_WEB_PORT": str(free_port())}
        return WorkerProcess.paybus(worker_env, logs / f"{name}.log", "--role", "sequencer").start()

    a, b = start("a"), start("b")
    reader = StatusReader(broker.bootstrap, tm)
    try:
        a.wait_ready()
        b.wait_ready()
        publish_events(broker.bootstrap, tm.payment_events.name, [e.as_record() for e in events])

        def some_progress() -> bool:
            reader.poll()
            return len(reader.updates) > 5_000

        wait_for(some_progress, 180, "5,000 status updates before the kill")
        assert reader.finals() != expected, "the run finished before the kill"
        a.kill()
        a = start("a2")
        a.wait_ready()

        def converged() -> bool:
            reader.poll()
            return reader.finals() == expected

        try:
            wait_for(converged, 400, "final statuses equal to the offline run", every_s=0.5)
        except AssertionError:
            got = reader.finals()
            wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
            raise AssertionError(
                f"{len(wrong)} aggregates differ, e.g. {list(wrong.items())[:5]}"
            ) from None
        by_event: dict[str, set[tuple[object, ...]]] = {}
        for u in reader.updates:
            by_event.setdefault(str(u["event_id"]), set()).add(
                (u["aggregate_id"], u["seq"], u["from_status"], u["to_status"])
            )
        applied_twice = {k: v for k, v in by_event.items() if len(v) > 1}
        assert not applied_twice, list(applied_twice.items())[:5]
        by_seq: dict[tuple[object, object], set[object]] = {}
        for u in reader.updates:
            by_seq.setdefault((u["aggregate_id"], u["seq"]), set()).add(u["event_id"])
        assert all(len(v) == 1 for v in by_seq.values())
        assert not reader.dead
    finally:
        reader.close()
        a.stop()
        b.stop()
