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
