"""Consumer lag against the embedded broker, and through a real Prometheus server."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, start_http_server

from streams.broker import EmbeddedBroker, free_port
from streams.lag import EndOffsetReader, end_offsets, group_lag, list_groups, partition_lag
from streams.lag_metrics import ConsumerLagCollector, kafka_reader

pytestmark = pytest.mark.broker

#: Records per partition, produced in batches so the last batch holds several records: the
#: case where Tansu's ListOffsets LATEST is short (base of the last batch + 1).
BATCHES = (10, 7)
N = sum(BATCHES)


@pytest.fixture
def topic(broker: EmbeddedBroker, topic_prefix: str) -> str:
    name = f"{topic_prefix}.lag"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 3, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50, batch_size=1 << 20)
    for size in BATCHES:
        for i in range(size):
            producer.send(name, value=b"v%d" % i, partition=0)
        producer.flush()
    producer.send(name, value=b"only", partition=1)
    producer.flush()
    producer.close()
    return name


def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
    finally:
        consumer.close()


def test_group_lag_uses_the_fetch_high_water_mark(broker: EmbeddedBroker, topic: str) -> None:
    group = f"{topic}.g"
    p0, p1, p2 = (TopicPartition(topic, p) for p in range(3))
    commit(broker.bootstrap, group, {p0: 4})

    rows = {r.partition: r for r in group_lag(broker.bootstrap, group)}

    assert rows[0].committed == 4 and rows[0].end == N and rows[0].lag == N - 4
    # Partitions of the topic the group never committed on are listed, lagging by their whole
    # log (the group would read them from the start): a backlog the lag alert must see.
    assert (rows[1].committed, rows[1].end, rows[1].lag) == (None, 1, 1)
    assert (rows[2].committed, rows[2].end, rows[2].lag) == (None, 0, 0)
    assert group in list_groups(broker.bootstrap)
    # What the fetch source corrects: ListOffsets on this broker is short by the last batch.
    # (The precondition of this test; test_broker_conformance pins the same deviation.)
    listed = end_offsets(broker.bootstrap, [p0, p1, p2], source="list_offsets")
    assert listed[p0] < N
    assert end_offsets(broker.bootstrap, [p0, p1, p2]) == {p0: N, p1: 1, p2: 0}


def test_lag_of_given_partitions_and_after_catching_up(broker: EmbeddedBroker, topic: str) -> None:
    group = f"{topic}.g2"
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    commit(broker.bootstrap, group, {p0: N, p1: 0})
    rows = partition_lag(broker.bootstrap, group, [p0, p1])
    assert [(r.partition, r.committed, r.end, r.lag) for r in rows] == [(0, N, N, 0), (1, 0, 1, 1)]


def kafka_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("kafka") and r.levelno >= logging.ERROR
    ]


def test_a_reader_read_again_and_again_logs_no_kafka_errors(
    broker: EmbeddedBroker, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker's lag timer reads every few seconds, mostly partitions it has caught up on;
    # a consumer made and closed per read had its metadata refresh cancelled by the close:
    # "ERROR kafka.cluster: Metadata refresh: failed Cancelled" once per read, the whole of
    # the dev worker's log.
    caplog.set_level(logging.ERROR, logger="kafka")
    group = f"{topic}.again"
    p0, p2 = TopicPartition(topic, 0), TopicPartition(topic, 2)
    commit(broker.bootstrap, group, {p0: N})  # caught up; p2 is empty
    reader = kafka_reader(broker.bootstrap)
    try:
        for _ in range(6):
            rows = reader(group, [p0, p2])
            assert [(r.partition, r.end, r.lag) for r in rows] == [(0, N, 0), (2, 0, 0)]
            time.sleep(0.2)  # the worker waits between reads too (lag_refresh_s)
        assert kafka_errors(caplog) == []
    finally:
        reader.close()


def test_a_reader_sees_records_produced_between_reads(broker: EmbeddedBroker, topic: str) -> None:
    # One consumer across reads must not answer from the high-water mark it saw last time.
    p2 = TopicPartition(topic, 2)
    with EndOffsetReader(broker.bootstrap) as reader:
        assert reader.read([p2]) == {p2: 0}
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send(topic, value=b"late", partition=2)
        producer.flush()
        producer.close()
        assert reader.read([p2]) == {p2: 1}


# --- a real Prometheus scraping the collector ---------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def exporter(broker: EmbeddedBroker, topic: str) -> Iterator[tuple[int, str]]:
    group = f"{topic}.prom"
    commit(broker.bootstrap, group, {TopicPartition(topic, 0): 5})
    registry = CollectorRegistry()
    owned = [TopicPartition(topic, 0)]
    registry.register(ConsumerLagCollector(group, lambda: owned, kafka_reader(broker.bootstrap)))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port, group
    finally:
        server.shutdown()
        thread.join(5)


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_prometheus_sees_the_lag_series(
    exporter: tuple[int, str], topic: str, tmp_path: Path
) -> None:
    exporter_port, group = exporter
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: paybus\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    assert PROMETHEUS is not None
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        result: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not result and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError):  # not listening yet
                result = query(prom_port, f'paybus_consumer_lag{{group="{group}"}}')
            if not result:
                time.sleep(0.25)  # Prometheus scrapes on its own clock; nothing to wait on
        assert result, "Prometheus never saw paybus_consumer_lag"
        (series,) = result
        assert series["metric"]["topic"] == topic and series["metric"]["partition"] == "0"
        assert float(series["value"][1]) == N - 5
        (end,) = query(prom_port, f'paybus_consumer_end_offset{{group="{group}"}}')
        assert float(end["value"][1]) == N
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
