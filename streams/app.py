"""Builds the one ``faust.App`` of a paybus worker from :class:`~streams.settings.Settings`.

Only this module constructs a ``faust.App``. It also adapts Faust to the embedded broker:

* Faust fixes the consumer's ``fetch_max_wait`` at 1.5 s, and Tansu holds an empty fetch for
  the whole wait, so on the embedded broker every quiet partition added up to 1.5 s of latency.
  A small transport subclass sets it from settings instead.
* Tansu answers group joins after about half the session timeout, so the embedded profile's
  short session timeout keeps rebalances around a second.
* aiokafka and faust build a debug log record per message even when the worker logs at warning
  level; their loggers are set explicitly.
* Faust's consumer can commit over, skip or reorder records around a rebalance;
  :mod:`streams.consumer` holds the fixed one.
* A record that cannot be decoded would be thrown into its agent by Faust (crashing it, or
  dropping the record silently); :class:`PaybusTopic` sends it to the DLQ instead.
* One full stream buffer makes Faust's fetch loop wait, stopping every stage of the worker;
  a stage that may wait for hours reads a :class:`PatientTopic`, whose buffer never does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.exceptions import ValueDecodeError
from faust.types import TransportT
from mode.utils.queues import ThrowableQueue

from streams.codec import AvroCodec
from streams.consumer import Transport
from streams.faust_codec import register_codecs
from streams.health import PRODUCER_METADATA_MAX_AGE_MS
from streams.registry_client import SchemaRegistryClient
from streams.settings import Settings
from streams.topics import TopicMap

_NOISY_LOGGERS = ("aiokafka", "faust", "mode", "kafka")
log = logging.getLogger(__name__)


class PaybusSchema(faust.Schema[Any, Any]):
    """Faust's schema, refusing a null value (a tombstone) where the topic allows none.

    A topic whose values go through a codec rather than a record type handed ``None`` to the
    agent as the value, and the stage failed on it batch after batch until the worker
    exited, and again after every restart: one tombstone stopped the partition for good.
    The bus's own topics carry no deletes, so a null value is undecodable like any other
    poison record (:class:`PaybusTopic` dead-letters it). Faust's decoder lets a null value
    through before calling this wherever the topic allows empty values (table changelogs,
    where a tombstone is a delete), so reaching here with one means it is not allowed.
    """

    def loads_value(self, app: Any, message: Any, **kwargs: Any) -> Any:
        if message.value is None:
            raise ValueDecodeError("null value (a tombstone; this topic carries no deletes)")
        return super().loads_value(app, message, **kwargs)


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
        # an outcome like any other (the dashboard's throughput and rejections by stage show
        # it); what the record was about is unknown, it could not be read
        metrics.EVENTS.labels("decode", "rejected", "unknown", "unknown").inc()
        fut = await app.send(dlq, key=letter.dead_letter_id.encode(), value=letter)
        await fut


class PaybusApp(faust.App):
    """A ``faust.App`` that carries the paybus settings, codec and topic map."""

    settings: Settings
    avro: AvroCodec
    topic_map: TopicMap

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

    #: Loop time by which a stopping app gives up on unacknowledged records (None: running).
    stop_deadline: float | None = None

    def stop_wait_left(self) -> float:
        """Seconds left to wait on Kafka while stopping (see ``stop_flush_timeout_s``)."""
        if self.stop_deadline is None:
            self.stop_deadline = self.loop.time() + self.settings.stop_flush_timeout_s
        return max(self.stop_deadline - self.loop.time(), 0.1)

    async def on_stop(self) -> None:
        self.stop_wait_left()  # starts the countdown shared with the producer's stop
        await super().on_stop()

    async def _producer_flush(self, logger: Any) -> None:
        """Flush the producer; when stopping, for at most ``stop_flush_timeout_s``.

        A rebalance flushes without a bound. Giving up when stopping loses nothing: a stage
        acks an input only once its outputs are acknowledged, and Faust flushes again before
        any commit (see ``Settings.stop_flush_timeout_s``)."""
        if self.stop_deadline is None:
            return await super()._producer_flush(logger)
        try:
            await asyncio.wait_for(super()._producer_flush(logger), self.stop_wait_left())
        except TimeoutError:
            log.warning("stopping with records Kafka has not acknowledged")


class _NeverFullQueue(ThrowableQueue[Any]):
    """A stream buffer that Faust's fetch loop never waits on (see :class:`PatientTopic`)."""

    def full(self) -> bool:
        return False


class PatientTopic(PaybusTopic):
    """A topic for a stage that may hold a batch for hours (the CRM writer through an outage):
    its full stream buffer never stops the worker's other stages.

    One fetch loop feeds every stream of a worker. A buffer past 80 % of
    ``stream_buffer_maxsize`` takes its partition out of the next fetches, and records of one
    already fetched are added anyway (``faust/transport/conductor.py``); but a buffer that is
    full makes the loop wait for room before it delivers anything else, so with the stage
    waiting, every partition of every stage on the worker stopped until it went on (measured
    on the embedded broker: a sequencer beside a waiting CRM writer applied nothing for the
    whole outage). This buffer is never full: it still takes its partitions out of the fetch
    at 80 %, and holds at most what was fetched with them beyond that (one fetch response per
    partition, ``consumer_max_fetch_size``), as Faust intends the 80 % mark to work.
    """

    @property
    def queue(self) -> ThrowableQueue[Any]:
        if self._queue is None:
            self._queue = _NeverFullQueue(
                maxsize=self.maxsize or self.app.conf.stream_buffer_maxsize,
                flow_control=self.app.flow_control,
                clear_on_resume=True,
            )
        return self._queue


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
        # Faust's own pages would sit next to the webhooks on a port PSPs reach: /table/...
        # serves table contents (sequencer state, PSP links, janitor status) to anyone who
        # asks, and /router/... the cluster's worker URLs. paybus routes nothing by table
        # key, so they go; the graph and stats pages (debug only) likewise.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        broker_session_timeout=timeout,
        broker_heartbeat_interval=max(timeout / 5, 0.1),
        broker_rebalance_timeout=max(timeout * 2, 4.0),
        broker_request_timeout=max(timeout * 4, 30.0),
        broker_commit_interval=0.5,
        broker_max_poll_interval=settings.max_poll_interval_s,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        table_standby_replicas=0,
        stream_wait_empty=False,
        datadir=str(settings.data_dir / "faust"),
        producer_acks=-1,
        Topic=PaybusTopic,
        Schema=PaybusSchema,
        # A few ms of linger lets one produce request carry many records: the sequencer and
        # the receiver await delivery per batch, not per record (bench: ~+15-20 %).
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        # /readyz reads the age of the producer's metadata as its evidence that the broker
        # answers (streams.health); aiokafka refreshes it this often (default: 5 minutes).
        producer_metadata_max_age_ms=PRODUCER_METADATA_MAX_AGE_MS,
    )
    app.settings = settings
    app.avro = avro
    app.topic_map = TopicMap.from_settings(settings)
    return app
