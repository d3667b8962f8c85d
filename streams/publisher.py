"""Publisher SDK for upstream systems: put validated ``CrmChange`` records on the bus.

Records are validated before anything is sent (a bad record never reaches Kafka): against the
Avro schema, and as intents (:func:`streams.intents.check_intent`: a card payment without a
card token, a refund without its payment, a negative amount are refused here with their
reason rather than failed by the router later). They are keyed by aggregate id so every change
of one payment lands on one partition, and sent with ``acks=all``; each call returns where the
record landed.

    from streams.publisher import Publisher
    with Publisher("127.0.0.1:9092") as pub:
        where = pub.publish_crm_change({...})
        print(where.partition, where.offset)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kafka import KafkaProducer

from streams.codec import AvroCodec
from streams.errors import ValidationError
from streams.intents import IntentError, check_intent
from streams.jsonl import to_record
from streams.topics import partition_key


def check_crm_change(record: Mapping[str, Any]) -> None:
    """The intent checks a publisher can make (those needing no bus configuration), as a
    ValidationError like the schema's."""
    try:
        check_intent(record)
    except IntentError as exc:
        raise ValidationError(str(exc)) from None


@dataclass(frozen=True)
class Published:
    """Where a record landed."""

    topic: str
    key: str
    partition: int
    offset: int


class Publisher:
    """Publishes records to paybus topics with kafka-python, ``acks=all``."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "paybus",
        codec: AvroCodec | None = None,
        client_id: str = "paybus-publisher",
        timeout_s: float = 30.0,
    ) -> None:
        self.codec = codec or AvroCodec()
        self.topic = f"{topic_prefix}.crm.changes"
        self.timeout_s = timeout_s
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            retries=5,
        )

    def publish_crm_change(self, change: Mapping[str, Any]) -> Published:
        """Validate, publish and wait for the broker's acknowledgement of one change."""
        return self.publish_crm_changes([change])[0]

    def publish_crm_changes(self, changes: Iterable[Mapping[str, Any]]) -> list[Published]:
        """Validate all, then publish all (batched) and wait for every acknowledgement.

        Validation happens before the first send, so a bad record in the batch publishes none.
        """
        records = [to_record(self.codec, "CrmChange", dict(c)) for c in changes]
        for record in records:
            check_crm_change(record)
        futures = []
        for record in records:
            key = partition_key(
                str(record["aggregate_type"]), str(record["aggregate_id"]), record.get("payment_id")
            )
            value = self.codec.encode("CrmChange", record)
            futures.append((key, self._producer.send(self.topic, key=key.encode(), value=value)))
        self._producer.flush(self.timeout_s)
        results = []
        for key, future in futures:
            meta = future.get(self.timeout_s)
            results.append(Published(self.topic, key, meta.partition, meta.offset))
        return results

    def close(self) -> None:
        self._producer.close(self.timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
