"""Builds the one ``faust.App`` of a paybus worker from :class:`~streams.settings.Settings`.

Only this module constructs a ``faust.App``. It also adapts Faust to the embedded broker:

* Faust fixes the consumer's ``fetch_max_wait`` at 1.5 s, and Tansu holds an empty fetch for
  the whole wait, so on the embedded broker every quiet partition added up to 1.5 s of latency.
  A small transport subclass sets it from settings instead.
* Tansu answers group joins after about half the session timeout, so the embedded profile's
  short session timeout keeps rebalances around a second.
* aiokafka and faust build a debug log record per message even when the worker logs at warning
  level; their loggers are set explicitly.
* A record that cannot be decoded would be thrown into its agent by Faust (crashing it, or
  dropping the record silently); :class:`PaybusTopic` sends it to the DLQ instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT
from mode.services import WaitResults

from streams import eager
from streams.codec import AvroCodec
from streams.faust_codec import register_codecs
from streams.offsets import fetch_highwaters
from streams.registry_client import SchemaRegistryClient
from streams.settings import Settings
from streams.topics import TopicMap

_NOISY_LOGGERS = ("aiokafka", "faust", "mode", "kafka")
log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Consumer thread whose fetch max wait comes from settings (Faust hard-codes 1.5 s)."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        consumer._fetch_max_wait_ms = paybus.settings.effective_fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        """End offsets for changelog recovery; from fetch responses where ListOffsets is wrong."""
        listed = await super()._highwaters(partitions)
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        if paybus.settings.effective_end_offsets != "fetch":
            return listed
        return await fetch_highwaters(paybus.settings.bootstrap_servers, listed)


class _NoReadOffsets(dict[Any, Any]):
    """Faust's "last offset read" per partition, deliberately never remembered.

    Faust skips a fetched record whose offset is below the last one read, and treats a jump
    above it as a gap that it later commits as if processed. Across a rebalance a batch fetched
    before the seek to committed offsets can be delivered after it: Faust then skips the
    re-fetched records and commits over the gap, so records are acknowledged that no stage ever
    saw (measured: 2-12 of 2,000 intents lost under repeated kill -9 on the embedded broker).
    Every paybus stage is idempotent (event-id dedup, idempotency keys, version guard), so the
    worker takes every record aiokafka returns, in order, and a repeat is harmless.
    """

    def __getitem__(self, key: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


#: The code of ``asyncio.Event.wait``: how the fetcher's ``suspend_flow.wait()`` is recognised.
_SUSPEND_WAIT_CODE = asyncio.Event.wait.__code__

#: Seconds a partition's commit may wait on a record that later records overtook before the
#: partition is re-read from its committed offset (longer than any batch takes to process).
GAP_REPAIR_S = 30.0


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, with fixes to what it commits and a repair for undelivered records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()
        self._gap_seen: dict[Any, float] = {}
        self._repairs: set[asyncio.Future[Any]] = set()

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """Faust's per-record ``wait_first(deliver(record), suspend_flow.wait())``, eagerly:
        a delivery that completes without waiting (the stream buffer has room) costs no task
        and no futures; one that must wait goes on as a task through the original path, so
        a rebalance can still interrupt it (see :mod:`streams.eager`)."""
        if (
            len(coros) == 2
            and timeout is None
            and getattr(coros[1], "cr_code", None) is _SUSPEND_WAIT_CODE
            and asyncio.iscoroutine(coros[0])
            and not self.suspend_flow.is_set()
        ):
            deliver, suspend = coros
            done, pending = eager.step(deliver)
            if done:
                suspend.close()
                return WaitResults([deliver], [pending], False)
            task = asyncio.ensure_future(eager.finish(deliver, pending))
            return await super().wait_first(task, suspend)
        return await super().wait_first(*coros, timeout=timeout)

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit: the end of the run of acked offsets that starts exactly at
        the committed offset, or None while the record at the committed offset is not done.

        Faust lets a run start one past the committed offset (its head-gap test is
        ``min(acked) - committed > 1``) and skips the test when the committed offset is 0 or
        unknown. Acks are not always in offset order: records a worker finished after their
        partition was revoked, or a batch fetched before a rebalance's seek, are acked ahead
        of the re-fetched record at the committed offset. Committing past that record before
        it is processed loses it for good when the worker then dies (measured: 1-3 of 2,000
        intents under repeated kill -9). Acks below the committed offset (work done twice) are
        dropped here so the run is measured from the committed offset.
        """
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if committed is not None:
            below = [o for o in acked if o < committed]
            if below:
                acked[:] = [o for o in acked if o >= committed]
                self._acked_index[tp].difference_update(below)
            if not acked or min(acked) > committed:
                if acked or self._waiting(tp, committed):
                    self._repair_gap(tp, committed)
                else:
                    self._gap_seen.pop(tp, None)
                return None
        self._gap_seen.pop(tp, None)
        result: int | None = super()._new_offset(tp)
        return result

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        """Faust's partitions with acks to commit, plus every assigned partition of a stage,
        so :meth:`_new_offset` also sees a partition where nothing is acked at all."""
        tps = set(self._acked)
        with contextlib.suppress(Exception):  # no assignment yet
            tps.update(tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic))
        return (tp for tp in tps if topics is None or tp in topics or tp.topic in topics)

    def _waiting(self, tp: Any, committed: int) -> bool:
        """Whether records wait beyond the committed offset (the last fetch's high-water
        mark): with none acked, the partition is stalled, or its records are in flight.
        Never for ``paybus.retry``, whose stage holds parked envelopes unacked until due."""
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        if tp.topic == paybus.topic_map.retry.name:
            return False
        try:
            return int(self.highwater(tp)) > committed
        except Exception:  # not fetched yet, or just revoked
            return False

    def _repair_gap(self, tp: Any, committed: int) -> None:
        """Re-read ``tp`` from ``committed`` when the record there has stayed undone for
        :data:`GAP_REPAIR_S` while later records were done, or while records waited in the
        partition and none of them was done (seen once in CI under repeated kill -9: a
        partition's records never reached its stage after a restart, with nothing acked
        after them, so no gap ever showed).

        Holding the commit keeps the record from being lost, but if it was never delivered
        (under repeated kill -9 a partition's first records were seen skipped: 1-4 of 2,000
        commands) nothing would ever ack it and the partition's commit would stay stuck until
        a restart. Seeking back delivers it (and the records after it) again; every stage is
        idempotent, so the repeats cost time, not correctness. A record that is merely slow
        (a long PSP call) is delivered twice at worst.
        """
        now = time.monotonic()
        since = self._gap_seen.setdefault(tp, now)
        if now - since < GAP_REPAIR_S:
            return
        self._gap_seen[tp] = now
        from streams import metrics

        metrics.OFFSET_GAP_REPAIRS.labels(tp.topic).inc()
        log.warning(
            "%s[%d]: offset %d still not processed %.0fs after later records were; "
            "re-reading the partition from it",
            tp.topic, tp.partition, committed, now - since,
        )  # fmt: skip
        repair = asyncio.ensure_future(self.seek(tp, committed))
        self._repairs.add(repair)
        repair.add_done_callback(self._repairs.discard)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets and, for partitions never committed, take the log
        start as the committed offset, so :meth:`_new_offset` always has a base to check
        runs against (the group starts there: ``auto_offset_reset`` is ``earliest``)."""
        await super().perform_seek()
        unknown = [
            tp
            for tp in self.assignment()
            if self._committed_offset.get(tp) is None and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if not unknown:
            return
        try:
            earliest = await self.earliest_offsets(*unknown)
        except Exception as exc:  # the broker is busy; Faust's own rule applies meanwhile
            log.warning("log start offsets of %d partition(s) unknown: %r", len(unknown), exc)
            return
        for tp, offset in earliest.items():
            if offset is not None and offset >= 0 and self._committed_offset.get(tp) is None:
                self._committed_offset[tp] = offset

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PaybusTopic(faust.Topic):
    """A topic whose undecodable records become dead letters (stage ``decode``).

    Faust's conductor has already acked the message when it calls these hooks; the default
    then throws the error into the agent. Here the original bytes, where they came from and
    the error go to ``paybus.dlq`` instead, and the partition keeps moving: a poison record
    never blocks the records behind it.
    """

    async def on_key_decode_error(self, exc: Exception, message: Any) -> None:
        await self._dead_letter("key", exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Any) -> None:
        await self._dead_letter("value", exc, message)

    async def _dead_letter(self, part: str, exc: Exception, message: Any) -> None:
        from streams import metrics
        from streams.deadletters import make_dead_letter

        app: PaybusApp = self.app  # type: ignore[assignment]
        metrics.DECODE_ERRORS.labels(message.topic).inc()
        dlq = app.topic_map.dlq.name
        if message.topic == dlq:
            log.error("undecodable dead letter %s@%s: %s", message.tp, message.offset, exc)
            return
        key = message.key if isinstance(message.key, bytes) else None
        value = message.value if isinstance(message.value, bytes) else None
        letter = make_dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            value=value,
            stage="decode",
            reason=f"undecodable {part}: {str(exc)[:480]}",
            aggregate_id=key.decode("utf-8", "replace") if key else None,
            error_log=[f"{type(exc).__name__}: {exc}"[:2000]],
        )
        metrics.DEAD_LETTERS.labels("decode").inc()
        fut = await app.send(dlq, key=letter.dead_letter_id.encode(), value=letter)
        await fut


class PaybusApp(faust.App):
    """A ``faust.App`` that carries the paybus settings, codec and topic map."""

    settings: Settings
    avro: AvroCodec
    topic_map: TopicMap

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


@dataclass
class Components:
    """What :func:`build_app` wires: the app plus the Faust topics by role."""

    app: PaybusApp
    topics: dict[str, faust.TopicT] = field(default_factory=dict)


def build_avro_codec(settings: Settings) -> AvroCodec:
    """The codec in the wire format the settings ask for."""
    registry = (
        SchemaRegistryClient(settings.schema_registry_url) if settings.schema_registry_url else None
    )
    return AvroCodec(registry=registry)


def quiet_loggers(level: str) -> None:
    """Set the per-message-chatty client loggers to the worker's level, explicitly."""
    numeric = logging.getLevelName(level.upper())
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(numeric if isinstance(numeric, int) else logging.WARNING)


def build_app(settings: Settings, *, autodiscover: bool = False) -> PaybusApp:
    """Build the worker's Faust app. Agents are attached by :mod:`streams.agents`."""
    avro = build_avro_codec(settings)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    register_codecs(avro)
    quiet_loggers(settings.log_level)
    timeout = settings.effective_session_timeout_s
    app = PaybusApp(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store=settings.store,
        autodiscover=autodiscover,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.effective_replication_factor,
        topic_allow_declare=True,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        broker_session_timeout=timeout,
        broker_heartbeat_interval=max(timeout / 5, 0.1),
        broker_rebalance_timeout=max(timeout * 2, 4.0),
        broker_request_timeout=max(timeout * 4, 30.0),
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        table_standby_replicas=0,
        stream_wait_empty=False,
        datadir=str(settings.data_dir / "faust"),
        producer_acks=-1,
        Topic=PaybusTopic,
        # A few ms of linger lets one produce request carry many records: the sequencer and
        # the receiver await delivery per batch, not per record (bench: ~+15-20 %).
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
    )
    app.settings = settings
    app.avro = avro
    app.topic_map = TopicMap.from_settings(settings)
    return app
