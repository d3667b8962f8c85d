"""The DLQ size a worker exports: dead letters neither replayed nor discarded, by stage.

A counter of letters sent (``paybus_dead_letters_total``) says something failed recently; it
cannot say whether anyone dealt with it, and it resets with the worker. What an operator and
the ``PaybusDeadLettersPending`` alert need is the DLQ's state: how many letters still wait
for a human. That state lives on ``paybus.dlq`` itself (letters plus replay/discard markers,
see :mod:`streams.dlq_store`), so the ops role reads the topic, without a group (nothing to
commit; every start reads it again from the beginning), and keeps reading where it stopped.

Only the id, stage and time of each record are kept (not the original bytes): a DLQ grown
large in an incident must not grow the worker with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.codec import AvroCodec
from streams.dlq_store import Ledger
from streams.partition_read import behind, drain

log = logging.getLogger(__name__)

PENDING = "paybus_dlq_pending_letters"
_SLIM = ("dead_letter_id", "stage", "failed_at")


class DlqWatch(Collector):
    """Reads ``topic`` incrementally on :meth:`refresh`; :meth:`collect` reports pending."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self._codec = AvroCodec()
        self._ledger = Ledger()
        self._consumer: KafkaConsumer | None = None
        #: Held by a refresh for all its Kafka I/O (seconds, up to ``timeout_s``); never taken
        #: by :meth:`collect`, which a scrape runs on the event loop: it reads :attr:`_pending`.
        self._lock = threading.Lock()
        #: Pending letters by stage as of the last refresh that had read to the end (None
        #: before one did), replaced whole, so a scrape reads it without a lock.
        self._pending: dict[str, int] | None = None
        #: False until one refresh has read to the end: no series before then (a half-read
        #: DLQ would report a count that is neither old nor new).
        self.caught_up = False
        self.undecodable = 0

    def refresh(self) -> None:
        """Read what was added since the last refresh (blocking I/O: keep it off the loop)."""
        with self._lock:
            consumer = self._consumer or self._open()
            try:
                self._follow_new_partitions(consumer)
                self.caught_up = self._read_to_end(consumer) or self.caught_up
            except Exception:
                # start again from the beginning next time: positions of a failed consumer
                # cannot be trusted to have covered everything. The last complete count stays
                # exported until the next full read replaces it: dropping the series would
                # restart the pending alert's hour at every broker hiccup.
                self._consumer, self._ledger, self.caught_up = None, Ledger(), False
                consumer.close()
                raise
            if self.caught_up:
                self._pending = self._count()

    def pending_by_stage(self) -> dict[str, int]:
        """Pending letters per stage as of the last refresh that read to the end ({} before
        one did); a stage whose letters were all closed reports 0 (so the alert resolves and
        the dashboard shows the drop, not a gap)."""
        return dict(self._pending or {})

    def _count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for letter in self._ledger.letters.values():
            stage = str(letter.record["stage"])
            counts[stage] = counts.get(stage, 0) + (not letter.resolved)
        return counts

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        if (pending := self._pending) is not None:
            for stage, count in sorted(pending.items()):
                family.add_metric([stage], count)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            PENDING,
            "Dead letters on the DLQ neither replayed nor discarded (paybus dlq), by the stage "
            "that sent them.",
            labels=["stage"],
        )

    def _open(self) -> KafkaConsumer:
        self._consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            client_id="paybus-dlq-watch",
        )
        return self._consumer

    def _follow_new_partitions(self, consumer: KafkaConsumer) -> None:
        known = set(consumer.assignment())
        found = {
            TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()
        }
        if found - known:
            consumer.assign(sorted(found | known))
            consumer.seek_to_beginning(*sorted(found - known))

    def _read_to_end(self, consumer: KafkaConsumer) -> bool:
        """Read what the DLQ's partitions hold up to their end; whether it got there."""
        tps = sorted(consumer.assignment())
        if not tps:
            return False
        for message in drain(consumer, tps, self.timeout_s):
            self._add(message.value)
        return not behind(consumer, tps)

    def _add(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone: nothing was dead-lettered by it
        try:
            record: dict[str, Any] = self._codec.decode(value, "DeadLetter")
        except Exception as exc:
            self.undecodable += 1
            log.warning("%s holds a record that is not a DeadLetter (not counted): %s",
                        self.topic, exc)  # fmt: skip
            return
        self._ledger.add({name: record.get(name) for name in _SLIM})
