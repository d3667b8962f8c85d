"""``/readyz`` and ``/healthz`` on real workers against the embedded broker.

A worker with agents answers 503 naming ``group`` from the moment its web server listens until
it has joined its consumer group, then 200; with its broker gone, readiness fails on every
role while liveness stays 200 (a restart would not bring Kafka back).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.processes import kill_group
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker


def probe(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body of ``GET path``, or None while the web server does not answer."""
    try:
        with urllib.request.urlopen(f"{worker.web_url}{path}", timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())
    except OSError:
        return None


def answers(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]]:
    got = probe(worker, path)
    assert got is not None, f"{path} did not answer"
    return got


def start(env: dict[str, str], log: Path, role: str) -> WorkerProcess:
    return WorkerProcess.paybus(env, log, "--role", role).start()


def test_readyz_is_503_until_the_worker_joins_its_group_then_200(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, TopicMap(topic_prefix, 8, 1).all())
    worker = start(
        paybus_env(broker.bootstrap, topic_prefix, tmp_path), tmp_path / "w.log", "router"
    )
    seen: list[tuple[int, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 60
        while not seen or seen[-1][0] != 200:
            assert time.monotonic() < deadline, f"never ready: {seen[-1:] or worker.log_tail()}"
            assert worker.exit_message() is None, worker.exit_message()
            if (got := probe(worker, "/readyz")) is not None:
                seen.append(got)
                # alive all along: joining is not a reason to restart
                assert answers(worker, "/healthz")[0] == 200
            time.sleep(0.05)
        status, body = seen[0]
        assert status == 503 and body["status"] == "not ready", seen[0]
        assert body["failing"] == ["group"], body  # it could publish from the start
        assert {"app", "producer", "consumer", "publish"} <= {
            name for name, result in body["checks"].items() if result == "ok"
        }
        ready = seen[-1][1]
        assert ready == {
            "status": "ready",
            "checks": dict.fromkeys(["app", "producer", "consumer", "publish", "group"], "ok"),
        }
        assert answers(worker, "/healthz") == (
            200,
            {"status": "alive", "checks": {"app": "ok", "producer": "ok", "consumer": "ok"}},
        )
    finally:
        worker.stop()


def test_with_the_broker_gone_readyz_is_503_and_healthz_stays_200(tmp_path: Path) -> None:
    # A broker of its own: the test kills it.
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    create_topics(broker.bootstrap, TopicMap("hlt", 8, 1).all())
    env = paybus_env(broker.bootstrap, "hlt", tmp_path / "router", PAYBUS_STOP_FLUSH_TIMEOUT_S="2")
    web_env = paybus_env(
        broker.bootstrap, "hlt", tmp_path / "web", PAYBUS_APP_ID="hlt-web",
        PAYBUS_STOP_FLUSH_TIMEOUT_S="2",
    )  # fmt: skip
    router = start(env, tmp_path / "router.log", "router")
    web = start(web_env, tmp_path / "web.log", "web")
    workers = (router, web)
    try:
        for worker in workers:
            wait_for(lambda w=worker: (probe(w, "/readyz") or (0,))[0] == 200, 60, "ready")
        # the receiver has no agents: it is ready as soon as it can publish
        assert set(answers(web, "/readyz")[1]["checks"]) == {
            "app",
            "producer",
            "consumer",
            "publish",
        }

        kill_group(broker.process)  # the broker dies (a polite stop waits 5 s on its clients)
        wait_for(lambda: answers(web, "/readyz")[0] == 503, 15, "the receiver to turn unready")
        wait_for(lambda: answers(router, "/readyz")[0] == 503, 15, "the worker to turn unready")
        wait_for(
            lambda: answers(router, "/readyz")[1]["failing"] == ["publish", "group"],
            15,
            "the worker to lose its group coordinator too",
        )
        body = answers(web, "/readyz")[1]
        assert body["failing"] == ["publish"], body
        assert body["checks"]["publish"].startswith("broker unreachable"), body
        assert answers(router, "/readyz")[1]["checks"]["group"].startswith("group coordinator lost")
        # Alive all the while, past a session timeout (2 s) and several heartbeats.
        until = time.monotonic() + 3
        while time.monotonic() < until:
            for worker in workers:
                assert answers(worker, "/healthz")[0] == 200, answers(worker, "/healthz")
                assert answers(worker, "/readyz")[0] == 503
            time.sleep(0.25)
    finally:
        for worker in workers:
            worker.kill()
        broker.stop()
