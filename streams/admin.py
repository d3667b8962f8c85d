"""Cluster administration over kafka-python: create and describe topics.

kafka-python 3.x renamed several admin calls and its ``describe_groups`` trips over Tansu's
``authorized_operations = -1``; this module is where such differences are absorbed, so the CLI
and tests never talk to ``KafkaAdminClient`` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.topics import TopicSpec


@dataclass(frozen=True)
class TopicState:
    """What the cluster says of one topic."""

    name: str
    partitions: int
    exists: bool


@contextmanager
def admin_client(bootstrap: str, client_id: str = "paybus-admin") -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
    try:
        yield client
    finally:
        client.close()


def create_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Create the topics that are missing; return ``{name: "created" | "exists"}``.

    Idempotent: an existing topic is left as it is (its partition count is reported by
    :func:`describe_topics`, never changed behind the operator's back).
    """
    result: dict[str, str] = {}
    with admin_client(bootstrap) as admin:
        existing = set(admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = "exists"
                continue
            topic = NewTopic(
                spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.configs
            )
            try:
                admin.create_topics([topic])
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
    return result


def describe_topics(bootstrap: str, names: Iterable[str]) -> list[TopicState]:
    """Partition counts of ``names`` (``exists=False`` for a missing one)."""
    names = list(names)
    with admin_client(bootstrap) as admin:
        existing = set(admin.list_topics())
        present = [n for n in names if n in existing]
        described = {
            d.get("topic", d.get("name")): len(d["partitions"])
            for d in admin.describe_topics(present)
        }
    return [TopicState(n, described.get(n, 0), n in existing) for n in names]


#: What to do about :func:`partition_mismatches` (the CLI's and the worker's error).
PARTITIONS_HELP = (
    "topics with another partition count than the bus is configured for (a payment's records "
    "must sit on the same partition number on every topic): recreate them (empty) with "
    "`paybus topics create`, or set PAYBUS_PARTITIONS to match all of them"
)


def partition_mismatches(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """One line per topic of the map that the cluster holds with another partition count.

    Every bus topic is keyed by the aggregate and read as if a payment's records sit on the
    same partition number on each of them (tables, parking and the retry topic rely on it),
    so a topic created by a producer before ``paybus topics create`` (a broker's auto-create,
    with its own default count) or left from an earlier ``PAYBUS_PARTITIONS`` breaks that
    silently. Said rather than fixed: Kafka cannot take partitions away, and adding some moves
    keys."""
    wanted = {spec.name: spec.partitions for spec in specs}
    return [
        f"{state.name} has {state.partitions} partitions; the bus is configured for "
        f"{wanted[state.name]} (PAYBUS_PARTITIONS)"
        for state in describe_topics(bootstrap, wanted)
        if state.exists and state.partitions != wanted[state.name]
    ]
