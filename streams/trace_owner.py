"""Whose story an id belongs to, when no record is keyed by it (``paybus trace``).

Operators are asked about a payment by whatever id the asker holds: the Stripe PaymentIntent
or GoCardless payment id from the PSP's dashboard, a refund's id from the CRM's refund record
or the PSP's. The bus keys a payment's records (its refunds' too) by the payment id, so a
trace of any other id found nothing, and the CLI could only hint that refunds are keyed by
their payment. This finds the key:

1. a PSP object id: the link record a connector worker wrote when it created the object (on
   the webhooks topic, keyed by the object id, naming the aggregate and its payment): one
   partition read;
2. otherwise an aggregate id or PSP object id that a status update names (a refund, an object
   the bus learnt of from a webhook): the status topic read whole, each record's bytes
   searched for the id before it is decoded. Bounded by the trace's timeout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from streams.agents.commands import is_link
from streams.codec import AvroCodec
from streams.topics import TopicMap
from streams.trace import TopicReader, partition_for


@dataclass(frozen=True)
class Owner:
    """The key whose story holds ``wanted``, and what ``wanted`` is in it."""

    key: str
    what: str


def owner_of(
    bootstrap: str, topics: TopicMap, wanted: str, codec: AvroCodec, *, timeout_s: float = 30.0
) -> tuple[Owner | None, dict[str, str]]:
    """The key of the payment (or mandate) whose records name ``wanted`` (None: no record
    does), and the topics or partitions that could not be searched, with why."""
    reader = TopicReader(bootstrap, timeout_s)
    skipped: dict[str, str] = {}
    try:
        found = _linked(reader, topics, wanted, codec, skipped) or _named(
            reader, topics, wanted, codec, skipped
        )
        skipped.update(reader.unfinished)
    finally:
        reader.close()
    return (found if found is None or found.key != wanted else None), skipped


def _linked(
    reader: TopicReader, topics: TopicMap, wanted: str, codec: AvroCodec, skipped: dict[str, str]
) -> Owner | None:
    name = topics.psp_webhooks.name
    if (n := reader.partitions(name, skipped)) is None:
        return None
    raw = wanted.encode()
    tp = TopicPartition(name, partition_for(raw, n))
    for _topic, message in reader.read([tp], lambda m: m.key == raw and m.value is not None):
        record = codec.decode(message.value, "PspWebhook")
        # The PSP's own webhooks about the object name no aggregate; the link does.
        link = _link(record)
        if key := link.get("payment_id") or link.get("aggregate_id"):
            kind = link.get("aggregate_type") or "aggregate"
            what = f"{record.get('psp')}'s object for {kind} {link.get('aggregate_id')}"
            return Owner(str(key), what)
    return None


def _link(record: dict[str, Any]) -> dict[str, Any]:
    """The body of a connector worker's link record; ``{}`` for any other webhook record."""
    if not is_link(
        record.get("content_type"), record.get("webhook_id"), record.get("psp_object_id")
    ):
        return {}
    try:
        body = json.loads(bytes(record["body"]))
    except ValueError:  # not this release's link: nothing to follow
        return {}
    return body if isinstance(body, dict) else {}


def _named(
    reader: TopicReader, topics: TopicMap, wanted: str, codec: AvroCodec, skipped: dict[str, str]
) -> Owner | None:
    name = topics.status_updates.name
    if (n := reader.partitions(name, skipped)) is None:
        return None
    raw = wanted.encode()
    tps = [TopicPartition(name, p) for p in range(n)]
    for _topic, message in reader.read(
        tps, lambda m: m.value is not None and m.key is not None and raw in m.value
    ):
        record = codec.decode(message.value, "StatusUpdate")
        kind = str(record.get("aggregate_type") or "aggregate")
        if record.get("aggregate_id") == wanted:
            return Owner(message.key.decode(), f"a {kind}")
        if record.get("psp_object_id") == wanted:
            return Owner(message.key.decode(), f"the PSP object of {kind} {record['aggregate_id']}")
    return None
