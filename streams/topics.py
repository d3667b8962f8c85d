"""The topic map: the one place that names paybus's topics, their keys, schemas and policies.

Everything else (the Faust app, the CLI, ``paybus topics render``, the deploy files' drift
test) asks this module; no other module spells a topic name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.settings import Settings

#: Connectors with a command topic; the registry may add more at run time.
DEFAULT_PSPS: tuple[str, ...] = ("stripe", "gocardless")


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the map."""

    role: str
    name: str
    key: str
    value_schema: str
    cleanup_policy: str
    partitions: int
    replication_factor: int
    writers: str
    readers: str
    retention_ms: int | None = None

    @property
    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


_WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicMap:
    """The topics of one deployment (prefix, partitions and replication come from settings)."""

    prefix: str
    partitions: int
    replication_factor: int
    psps: tuple[str, ...] = DEFAULT_PSPS

    @classmethod
    def from_settings(cls, settings: Settings, psps: Iterable[str] = DEFAULT_PSPS) -> TopicMap:
        return cls(
            prefix=settings.topic_prefix,
            partitions=settings.partitions,
            replication_factor=settings.effective_replication_factor,
            psps=tuple(psps),
        )

    def _spec(self, role: str, suffix: str, key: str, schema: str, **kw: str) -> TopicSpec:
        return TopicSpec(
            role=role,
            name=f"{self.prefix}.{suffix}",
            key=key,
            value_schema=schema,
            cleanup_policy=kw.pop("cleanup", "delete"),
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            writers=kw.pop("writers"),
            readers=kw.pop("readers"),
            retention_ms=_WEEK_MS if kw.pop("week", "") else None,
        )

    @property
    def crm_changes(self) -> TopicSpec:
        return self._spec(
            "crm_changes", "crm.changes", "aggregate id", "CrmChange",
            writers="upstream publishers, CRM source, HTTP ingest, janitor (expired pages)",
            readers="router",
        )  # fmt: skip

    @property
    def psp_webhooks(self) -> TopicSpec:
        return self._spec(
            "psp_webhooks", "psp.webhooks", "PSP object id", "PspWebhook",
            writers="webhook receiver", readers="normaliser",
        )  # fmt: skip

    def commands(self, psp: str) -> TopicSpec:
        return self._spec(
            f"commands_{psp}", f"commands.{psp}", "aggregate id", "PaymentCommand",
            writers="router", readers=f"{psp} connector worker",
        )  # fmt: skip

    @property
    def payment_events(self) -> TopicSpec:
        return self._spec(
            "payment_events", "payments.events", "aggregate id", "PaymentEvent",
            writers="normaliser, connector workers, backfill, janitor", readers="sequencer",
        )  # fmt: skip

    @property
    def status_updates(self) -> TopicSpec:
        return self._spec(
            "status_updates", "payments.status", "aggregate id", "StatusUpdate",
            writers="sequencer", readers="CRM writer, any subscriber",
        )  # fmt: skip

    @property
    def retry(self) -> TopicSpec:
        return self._spec(
            "retry", "retry", "aggregate id", "RetryEnvelope",
            writers="any stage", readers="retry agent",
        )  # fmt: skip

    @property
    def dlq(self) -> TopicSpec:
        return self._spec(
            # keyed by the letter's own id (not the aggregate's, as DESIGN's table has it):
            # compaction must keep every letter of an aggregate, and a replay or discard
            # marker replaces only its own letter
            "dlq", "dlq", "dead letter id", "DeadLetter",
            writers="any stage", readers="operators (paybus dlq), ops (pending gauge)",
            cleanup="compact,delete",
            week="1",
        )  # fmt: skip

    def all(self) -> list[TopicSpec]:
        """Every topic, in data-flow order."""
        return [
            self.crm_changes,
            self.psp_webhooks,
            *(self.commands(psp) for psp in self.psps),
            self.payment_events,
            self.status_updates,
            self.retry,
            self.dlq,
        ]

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.all():
            if spec.name == name:
                return spec
        raise KeyError(name)


def partition_key(aggregate_type: str, aggregate_id: str, payment_id: str | None = None) -> str:
    """The Kafka key of a record about an aggregate: the payment id for payments *and their
    refunds* (so a refund shares its payment's partition and order), else the aggregate id."""
    if aggregate_type == "refund" and payment_id:
        return payment_id
    return aggregate_id
