"""What ``/healthz`` and ``/readyz`` decide from a worker's state (no broker).

Liveness fails only for what a restart cures, never for Kafka being away; readiness names each
check that keeps the worker from doing its job.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from mode.threads import ServiceThread

from streams import health
from streams.app import build_app
from streams.health import LOOP_SILENT_S, METADATA_STALE_S, Snapshot, liveness, readiness, verdict
from streams.settings import Settings

#: A worker with agents, joined, its broker answering.
WORKING = Snapshot(
    producer_started=True,
    metadata_age_s=1.0,
    consumer_loop_silent_s=0.5,
    needs_group=True,
    consumer_started=True,
    coordinator_known=True,
    group_member=True,
    rebalances=1,
)
#: The same worker with its broker gone: the last refresh failed, the coordinator is lost.
BROKER_GONE = replace(WORKING, metadata_failed=True, coordinator_known=False)


def failing(checks: dict[str, str]) -> list[str]:
    status, body = verdict(checks, "fine", "not fine")
    assert (status == 200) == ("failing" not in body)
    return list(body.get("failing", []))


def test_a_working_worker_is_alive_and_ready() -> None:
    assert verdict(liveness(WORKING), "alive", "not alive") == (
        200,
        {"status": "alive", "checks": {"app": "ok", "producer": "ok", "consumer": "ok"}},
    )
    status, body = verdict(readiness(WORKING), "ready", "not ready")
    assert status == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"app", "producer", "consumer", "publish", "group"}


def test_kafka_unreachable_fails_readiness_and_never_liveness() -> None:
    assert failing(liveness(BROKER_GONE)) == []
    assert failing(readiness(BROKER_GONE)) == ["publish", "group"]
    stale = replace(WORKING, metadata_age_s=METADATA_STALE_S + 1)  # a refresh that hangs
    assert failing(liveness(stale)) == []
    assert (
        readiness(stale)["publish"]
        == f"broker unreachable: no metadata for {METADATA_STALE_S + 1:.0f} s"
    )
    mid_rebalance = replace(WORKING, rebalancing=True, group_member=False)
    assert failing(liveness(mid_rebalance)) == []


@pytest.mark.parametrize(
    ("broken", "check", "reason"),
    [
        (replace(WORKING, app_crash="RuntimeError('boom')"), "app", "crashed: RuntimeError"),
        (replace(WORKING, app_stopping=True), "app", "stopping"),
        (replace(WORKING, producer_crash="KeyError('x')"), "producer", "crashed: KeyError"),
        (replace(WORKING, consumer_crash="OSError()"), "consumer", "consumer thread crashed"),
        (
            replace(WORKING, consumer_loop_silent_s=LOOP_SILENT_S + 5),
            "consumer",
            "consumer thread's event loop silent",
        ),
    ],
)
def test_what_a_restart_cures_fails_liveness_and_readiness(
    broken: Snapshot, check: str, reason: str
) -> None:
    assert failing(liveness(broken)) == [check]
    assert liveness(broken)[check].startswith(reason)
    assert check in failing(readiness(broken))


def test_a_busy_consumer_loop_is_not_dead() -> None:
    assert failing(liveness(replace(WORKING, consumer_loop_silent_s=LOOP_SILENT_S))) == []
    assert failing(liveness(replace(WORKING, consumer_loop_silent_s=None))) == []  # not started


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (replace(WORKING, producer_started=False), "producer not started"),
        (replace(WORKING, metadata_age_s=None), "broker not reached yet"),
        (replace(WORKING, metadata_failed=True), "broker unreachable: the last metadata refresh"),
        (replace(WORKING, metadata_age_s=METADATA_STALE_S + 0.5), "broker unreachable: no meta"),
    ],
)
def test_publish_fails_until_the_broker_answered_lately(state: Snapshot, reason: str) -> None:
    assert readiness(state)["publish"].startswith(reason)
    assert failing(readiness(state)) == ["publish"]
    answers = replace(state, producer_started=True, metadata_age_s=METADATA_STALE_S)
    assert readiness(replace(answers, metadata_failed=False))["publish"] == "ok"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (Snapshot(needs_group=True), "consumer not started"),
        (replace(WORKING, coordinator_known=False, rebalances=0), "looking for the group coord"),
        (replace(WORKING, group_member=False, rebalancing=True), "joining the consumer group"),
        (replace(WORKING, rebalancing=True, rebalances=2), "rebalancing"),
        (replace(WORKING, rejoin_pending=True), "rebalancing"),
        (replace(WORKING, rebalances=0), "waiting for the first partition assignment"),
        (replace(WORKING, coordinator_known=False, rebalances=3), "group coordinator lost"),
    ],
)
def test_group_fails_until_joined_and_between_rebalances(state: Snapshot, reason: str) -> None:
    assert readiness(state)["group"].startswith(reason)
    assert "group" in failing(readiness(state))


def test_a_worker_without_agents_is_ready_once_it_can_publish() -> None:
    web = replace(BROKER_GONE, needs_group=False, metadata_failed=False)
    assert "group" not in readiness(web)
    assert failing(readiness(web)) == []
    assert failing(readiness(replace(web, metadata_failed=True))) == ["publish"]


@pytest.mark.usefixtures("clean_env")
def test_snapshot_of_an_app_that_has_not_started() -> None:
    app = build_app(Settings())
    state = health.snapshot(app)
    assert app._producer is None and app._consumer is None, "the probe created a client"
    assert failing(liveness(state)) == []
    assert failing(readiness(state)) == ["publish"]
    assert readiness(state)["publish"] == "producer not started"

    @app.agent(app.topic("health-test"))  # type: ignore[untyped-decorator]
    async def work(stream: object) -> None:  # an agent makes the group a requirement
        pass

    state = health.snapshot(app)
    assert state.needs_group
    assert failing(readiness(state)) == ["publish", "group"]
    assert readiness(state)["group"] == "consumer not started"


class _Thread(ServiceThread):
    """A bare mode service thread: what Faust runs its Kafka consumer in."""


async def test_a_wedged_thread_loop_shows_as_silence() -> None:
    """mode stamps ``last_wakeup_at`` from the thread's own loop, about every second: the
    consumer check's evidence. It stops while that loop is blocked, and resumes after."""
    thread = _Thread()
    await thread.start()
    try:
        deadline = time.monotonic() + 5
        while health.loop_silent_s(thread, time.monotonic()) is None:
            assert time.monotonic() < deadline, "the thread's loop never stamped its wake-up"
            await asyncio.sleep(0.1)
        thread.thread_loop.call_soon_threadsafe(time.sleep, 2.0)  # the loop is wedged
        await asyncio.sleep(1.8)
        silent = health.loop_silent_s(thread, time.monotonic())
        assert silent is not None and silent > 1.5
        await asyncio.sleep(0.8)
        silent = health.loop_silent_s(thread, time.monotonic())
        assert silent is not None and silent < 1.5
    finally:
        await thread.stop()
    assert health.loop_silent_s(None, time.monotonic()) is None  # no consumer thread yet


def test_a_check_that_breaks_restarts_nothing_and_vouches_for_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(app: object) -> Snapshot:
        raise AttributeError("'AIOKafkaConsumer' object has no attribute '_coordinator'")

    monkeypatch.setattr(health, "snapshot", broken)
    app = build_app(Settings(topic_prefix="unit"))
    status, body = health.liveness_answer(app)
    assert status == 200 and "_coordinator" in body["checks"]["snapshot"]
    status, body = health.readiness_answer(app)
    assert status == 503 and body["failing"] == ["snapshot"]
