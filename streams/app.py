"""Builds the one ``faust.App`` of a paybus worker from :class:`~streams.settings.Settings`.

Only this module constructs a ``faust.App``. It also adapts Faust to the embedded broker:

* Faust fixes the consumer's ``fetch_max_wait`` at 1.5 s, and Tansu holds an empty fetch for
  the whole wait, so on the embedded broker every quiet partition added up to 1.5 s of latency.
  A small transport subclass sets it from settings instead.
* Tansu answers group joins after about half the session timeout, so the embedded profile's
  short session timeout keeps rebalances around a second.
* aiokafka and faust build a debug log record per message even when the worker logs at warning
  level; their loggers are set explicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from streams.codec import AvroCodec
from streams.faust_codec import register_codecs
from streams.offsets import fetch_highwaters
from streams.registry_client import SchemaRegistryClient
from streams.settings import Settings
from streams.topics import TopicMap

_NOISY_LOGGERS = ("aiokafka", "faust", "mode", "kafka")


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


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


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
        # A few ms of linger lets one produce request carry many records: the sequencer and
        # the receiver await delivery per batch, not per record (bench: ~+15-20 %).
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
    )
    app.settings = settings
    app.avro = avro
    app.topic_map = TopicMap.from_settings(settings)
    return app
