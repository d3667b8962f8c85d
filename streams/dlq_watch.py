"""The DLQ size a worker exports: dead letters neither replayed nor discarded, by stage; and
the letters the bus replays by itself, which it keeps for :mod:`streams.agents.dlq`.

A counter of letters sent (``paybus_dead_letters_total``) says something failed recently; it
cannot say whether anyone dealt with it, and it resets with the worker. What an operator and
the ``PaybusDeadLettersPending`` alert need is the DLQ's state: how many letters still wait
for a human. That state lives on ``paybus.dlq`` itself (letters plus replay/discard markers,
see :mod:`streams.dlq_store`), so the ops role reads the topic, without a group (nothing to
commit; every start reads it again from the beginning), and keeps reading where it stopped.

Only the id, stage and times of each record are kept (not the original bytes): a DLQ grown
large in an incident must not grow the worker with it. The exception are letters with a
``retry_at`` (:mod:`streams.auto_replay`), whose bytes the automatic replay needs: at most
``keep`` of them at a time; a letter beyond that is left to operators (logged, counted
``over_cap``). While one waits for its replay (and is not overdue) it is counted in
``paybus_dlq_scheduled_letters``, not as pending: the pending alert is for what needs a human.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams import auto_replay, metrics
from streams.codec import AvroCodec
from streams.dlq_store import REPLAYED, RESOLUTIONS, Ledger, Letter, decode_letter
from streams.kafka_headers import Headers
from streams.partition_read import behind, drain

log = logging.getLogger(__name__)

PENDING = "paybus_dlq_pending_letters"
SCHEDULED = "paybus_dlq_scheduled_letters"
_SLIM = ("dead_letter_id", "stage", "failed_at", "retry_at")


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in _SLIM}


class DlqWatch(Collector):
    """Reads ``topic`` incrementally on :meth:`refresh`; :meth:`collect` reports pending and
    scheduled letters; :meth:`due` and :meth:`closed` serve the automatic replay."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        timeout_s: float = 10.0,
        keep: int = 0,
        grace: timedelta = auto_replay.OVERDUE_MIN,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        #: Most letters with a ``retry_at`` kept whole (0: none; automatic replay is off).
        self.keep = keep
        #: How long past its ``retry_at`` a letter still counts as scheduled, not pending.
        self.grace = grace
        self._codec = AvroCodec()
        self._ledger = Ledger()
        #: Open letters kept whole for their automatic replay: id -> DLQ partition.
        self._kept: dict[str, int] = {}
        #: Letters left to operators for want of room (counted and logged once each), and
        #: those found so since the last complete read: counted only if still open once the
        #: read has reached the end (re-reading the DLQ after a restart meets letters whose
        #: replay markers come further on; they were not over any cap).
        self._over_cap: set[str] = set()
        self._over_cap_found: dict[str, str] = {}
        #: Whether the last refresh read every partition to its end: only then may a letter
        #: be replayed (its marker may be further on).
        self._at_end = False
        self._consumer: KafkaConsumer | None = None
        #: Held by a refresh for all its Kafka I/O (seconds, up to ``timeout_s``); never taken
        #: by :meth:`collect`, which a scrape runs on the event loop: it reads :attr:`_pending`.
        self._lock = threading.Lock()
        #: Pending letters by stage as of the last refresh that had read to the end (None
        #: before one did), replaced whole, so a scrape reads it without a lock; and those
        #: waiting for an automatic replay.
        self._pending: dict[str, int] | None = None
        self._scheduled: dict[str, int] = {}
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
                self._at_end = self._read_to_end(consumer)
                self.caught_up = self._at_end or self.caught_up
                if self._at_end:
                    self._count_over_cap()
            except Exception:
                # start again from the beginning next time: positions of a failed consumer
                # cannot be trusted to have covered everything. The last complete count stays
                # exported until the next full read replaces it: dropping the series would
                # restart the pending alert's hour at every broker hiccup.
                self._consumer, self._ledger, self.caught_up = None, Ledger(), False
                self._kept, self._at_end = {}, False
                consumer.close()
                raise
            if self.caught_up:
                self._pending, self._scheduled = self._count(datetime.now(UTC))

    def pending_by_stage(self) -> dict[str, int]:
        """Pending letters per stage as of the last refresh that read to the end ({} before
        one did); a stage whose letters were all closed reports 0 (so the alert resolves and
        the dashboard shows the drop, not a gap)."""
        return dict(self._pending or {})

    def due(self, now: datetime, owns: Callable[[int], bool]) -> list[Letter]:
        """Copies of the kept letters whose ``retry_at`` has passed, on DLQ partitions this
        worker ``owns``; none unless the last refresh read to the end (a letter's marker may
        be further on, and it would be replayed twice)."""
        with self._lock:
            if not self._at_end:
                return []
            letters = [self._ledger.letters.get(lid) for lid, p in self._kept.items() if owns(p)]
            return [
                Letter(dict(lt.record))
                for lt in letters
                if lt is not None and not lt.resolved and auto_replay.is_due(lt.record, now)
            ]

    def closed(self, letters: list[Letter]) -> None:
        """Record that ``letters`` were replayed and marked (before their markers are read
        back: the next tick must not replay them again), dropping their bytes."""
        with self._lock:
            for letter in letters:
                if (known := self._ledger.letters.get(letter.id)) is not None:
                    known.resolved_at, known.resolution = letter.resolved_at, REPLAYED
                    known.record = _slim(known.record)
                self._kept.pop(letter.id, None)

    def _count(self, now: datetime) -> tuple[dict[str, int], dict[str, int]]:
        pending: dict[str, int] = {}
        scheduled: dict[str, int] = {}
        for lid, letter in self._ledger.letters.items():
            stage = str(letter.record["stage"])
            waits = (
                not letter.resolved
                and lid in self._kept
                and auto_replay.waits_for_replay(letter.record, now, self.grace)
            )
            pending[stage] = pending.get(stage, 0) + (not letter.resolved and not waits)
            scheduled[stage] = scheduled.get(stage, 0) + waits
        return pending, scheduled

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family, waiting = self._families()
        if (pending := self._pending) is not None:
            for stage, count in sorted(pending.items()):
                family.add_metric([stage], count)
            for stage, count in sorted(self._scheduled.items()):
                waiting.add_metric([stage], count)
        yield family
        yield waiting

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            PENDING,
            "Dead letters on the DLQ neither replayed nor discarded (paybus dlq), by the stage "
            "that sent them; letters waiting for an automatic replay are not among them.",
            labels=["stage"],
        )
        scheduled = GaugeMetricFamily(
            SCHEDULED,
            "Dead letters the bus replays by itself at their retry_at (not overdue), by stage.",
            labels=["stage"],
        )
        return pending, scheduled

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
            self._add(message.value, message.partition, message.headers)
        return not behind(consumer, tps)

    def _add(self, value: bytes | None, partition: int = 0, headers: Headers = None) -> None:
        if value is None:
            return  # a tombstone: nothing was dead-lettered by it
        try:
            record = decode_letter(self._codec, value, headers)
        except Exception as exc:
            self.undecodable += 1
            log.warning("%s holds a record that is not a DeadLetter (not counted): %s",
                        self.topic, exc)  # fmt: skip
            return
        self._file(record, partition)

    def _file(self, record: dict[str, Any], partition: int) -> None:
        """Ledger a DLQ record: slim, except a letter with a ``retry_at`` while fewer than
        ``keep`` are kept (whole, with its DLQ partition, for its automatic replay)."""
        lid, stage = str(record["dead_letter_id"]), record.get("stage")
        if stage in RESOLUTIONS or record.get("retry_at") is None:
            was_kept = self._kept.pop(lid, None) is not None  # closed, or now an operator's
            self._ledger.add(_slim(record))
            if was_kept and (letter := self._ledger.letters.get(lid)) is not None:
                letter.record = _slim(letter.record)  # a marker closed it: drop the bytes
            return
        if lid in self._kept or len(self._kept) < self.keep:
            self._kept[lid] = partition
            self._ledger.add(record)
            return
        self._ledger.add({**_slim(record), "retry_at": None})  # an operator's, like any other
        if self.keep and lid not in self._over_cap:  # (keep 0: automatic replay is off)
            self._over_cap_found[lid] = str(stage)

    def _count_over_cap(self) -> None:
        """Count and log the letters left to operators for want of room that are still open
        now that the read has reached the end of every partition."""
        for lid, stage in self._over_cap_found.items():
            letter = self._ledger.letters.get(lid)
            if letter is None or letter.resolved or lid in self._over_cap:
                continue
            self._over_cap.add(lid)
            metrics.DLQ_AUTO_REPLAYS.labels(stage, auto_replay.OVER_CAP).inc()
            log.warning("dead letter %s: %d letters already wait for an automatic replay (the "
                        "most kept); left to operators", lid, self.keep)  # fmt: skip
        self._over_cap_found.clear()
