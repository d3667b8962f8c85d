"""A real Prometheus scrapes a running worker and sees its lag and outcome series, and the
shipped alert rules fire on what the worker exports (deploy/prometheus/rules.yml)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.demo_data import delivery, histories
from streams.topics import TopicMap
from tests.integration.streams.test_lag import PROMETHEUS, query
from tests.integration.streams.test_sequencer_agent import publish_events
from tests.support.workers import WorkerProcess, paybus_env, wait_for

RULES = Path(__file__).parents[3] / "deploy" / "prometheus" / "rules.yml"

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed"),
]


def test_prometheus_scrapes_worker_lag_and_outcomes(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path, PAYBUS_LAG_REFRESH_S="1")
    worker = WorkerProcess.paybus(env, tmp_path / "w.log", "--role", "sequencer").start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: paybus-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker.web_port}']}}]\n"
    )
    assert PROMETHEUS is not None
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    group = env["PAYBUS_APP_ID"]
    try:
        worker.wait_ready()
        events = list(delivery(histories(30, seed=9), seed=9))
        publish_events(broker.bootstrap, tm.payment_events.name, [e.as_record() for e in events])
        lag: list[dict[str, Any]] = []
        applied: list[dict[str, Any]] = []
        deadline = time.monotonic() + 90
        while not (lag and applied) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError):
                lag = query(prom_port, f'paybus_consumer_lag{{group="{group}"}}')
                applied = query(prom_port, 'paybus_events_total{outcome="applied"}')
            if not (lag and applied):
                time.sleep(0.5)  # Prometheus scrapes on its own clock
        assert lag, "Prometheus never saw the worker's paybus_consumer_lag"
        topics = {s["metric"]["topic"] for s in lag}
        assert topics <= {t.name for t in tm.all()} and tm.payment_events.name in topics
        assert sum(float(s["value"][1]) for s in applied) > 0

        # The first dead letter of a worker pages: its stage's counter is exported at 0 from
        # start-up, so increase() sees the step (a series born at 1 shows no increase at all).
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send(tm.payment_events.name, key=b"pay-poison", value=b"not avro")
        producer.flush(10)
        producer.close()

        def dead_letter_alert() -> bool:
            with contextlib.suppress(OSError):
                alerts = 'ALERTS{alertname="PaybusDeadLetters",stage="decode"}'
                return bool(query(prom_port, alerts))
            return False

        wait_for(dead_letter_alert, 60, "the first dead letter to raise PaybusDeadLetters")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        log.close()
        worker.stop()
