"""The PSP connector interface every ``connectors/<name>/`` package implements.

A connector does four things, all synchronous (the PSP client libraries are; the workers call
them in a thread): execute a :class:`~streams.records.PaymentCommand` at the PSP, look up the
PSP's current status of an object, verify and split webhook requests, and normalise a verified
webhook into canonical :class:`~streams.records.PaymentEvent` records. Mapping of PSP statuses
onto the canonical lifecycles lives in each connector's pure ``transformers.py``.

Connectors are found through the ``paybus.connectors`` entry-point group
(:mod:`connectors.registry`), and none imports a sibling.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from connectors.errors import PermanentError
from streams.records import PaymentCommand, PaymentEvent

if TYPE_CHECKING:
    from streams.settings import Settings

OPERATIONS = ("create_payment", "request_payment", "create_mandate", "cancel", "refund")

#: Attribute of an event whose PSP object carries metadata, none of it the bus's: an object
#: another system made on the same PSP account (one account often serves a web shop, a
#: billing system and the bus, and its webhooks carry everything). Where no link names it
#: either, the normaliser counts it ``foreign`` rather than dead-lettering it.
FOREIGN_ATTRIBUTE = "psp_foreign"


def unmarked(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """``attributes`` without the foreign marker (an event a link named is the bus's)."""
    return {k: v for k, v in (attributes or {}).items() if k != FOREIGN_ATTRIBUTE}


def foreign_marker(metadata: object, key: str) -> dict[str, str]:
    """``{FOREIGN_ATTRIBUTE: "true"}`` when ``metadata`` (a PSP object's metadata) is a
    mapping without the bus's ``key``; ``{}`` otherwise (including when the object has no
    metadata to judge by, such as a Stripe dispute, whose metadata is never the payment's)."""
    if isinstance(metadata, Mapping) and not metadata.get(key):
        return {FOREIGN_ATTRIBUTE: "true"}
    return {}


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (HTTP header names are case-insensitive): every PSP's
    signature header reaches ``verify_webhook`` spelt however the web server passed it on."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def require_fields(command: PaymentCommand, psp: str, *names: str) -> None:
    """Refuse a command lacking any of ``names`` before calling the PSP: a permanent error
    (``invalid_command``), as retrying the same command can never supply them."""
    missing = [n for n in names if getattr(command, n) in (None, "")]
    if missing:
        raise PermanentError(
            f"{command.operation} command {command.command_id} lacks {', '.join(missing)}",
            psp=psp,
            code="invalid_command",
        )


def idempotency_key(command_id: str, psp: str) -> str:
    """The PSP idempotency key of a command: derived from its event id, never random.

    A command re-delivered after a crash carries the same id and so the same key, and the PSP
    answers with the object it already created instead of charging twice.
    """
    digest = hashlib.sha256(f"paybus:{psp}:{command_id}".encode()).hexdigest()[:40]
    return f"paybus-{digest}"


@dataclass(frozen=True)
class CommandResult:
    """What executing a command produced at the PSP."""

    #: PSP id of the object created or acted on.
    psp_object_id: str | None
    #: Canonical events learnt from the PSP's answer (e.g. ``created`` or a synchronous decline).
    events: list[PaymentEvent] = field(default_factory=list)
    #: PSP object ids -> aggregate ids, for the normaliser's lookup table.
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusLookup:
    """The PSP's current view of one object (for reconcile and the janitor)."""

    psp_object_id: str
    aggregate_type: str
    status: str
    observed_at: datetime
    settlement_date: str | None = None


@dataclass(frozen=True)
class PageState:
    """What a payment page shows of one payment (``streams/pages.py``), from its PSP."""

    #: ``open`` (waiting for the customer), ``paid``, ``processing`` or ``closed``.
    state: str
    amount_minor: int
    currency: str
    description: str | None = None
    #: What the browser needs to pay (Stripe: the PaymentIntent's client secret).
    client_secret: str | None = None
    #: Why a closed payment closed (cancelled, failed), for the error page.
    reason: str | None = None


@dataclass(frozen=True)
class VerifiedWebhook:
    """One verified unit of a webhook request (a PSP may batch several events in one request)."""

    webhook_id: str
    psp_object_id: str
    body: bytes
    #: How ``body`` differs from the request body the PSP signed, or None when it is that
    #: body: the signature header stored beside it verifies only then (an auditor's question).
    altered: str | None = None


class PspConnector(abc.ABC):
    """Base class of PSP connectors."""

    #: The connector's name: the entry-point name, the ``/webhooks/{psp}`` path segment and the
    #: ``paybus.commands.<name>`` topic suffix.
    name: ClassVar[str]

    def __init__(
        self,
        settings: Settings,
        *,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        #: Webhook bodies above this are refused before their signature is even computed.
        self.max_webhook_bytes = settings.webhook_max_body_bytes
        #: In-process attempts per PSP call (``connectors.retry.call_with_retries``); the sleep
        #: and clock are injectable so tests neither wait nor depend on the wall clock.
        self._attempts = attempts
        self._sleep = sleep
        self._clock = clock

    @abc.abstractmethod
    def execute(self, command: PaymentCommand) -> CommandResult:
        """Carry out ``command`` at the PSP with an idempotency key derived from its id.

        Raises :class:`~connectors.errors.ConnectorError` (``should_retry`` says whether to try
        again). A business failure (a declined card) is *not* an error: it comes back as a
        ``failed`` event in the result.
        """

    @abc.abstractmethod
    def lookup_status(self, aggregate_type: str, psp_object_id: str) -> StatusLookup:
        """The PSP's current canonical status of an object."""

    @abc.abstractmethod
    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[VerifiedWebhook]:
        """Verify a webhook request's signature; raise ``WebhookVerificationError`` if bad."""

    @abc.abstractmethod
    def normalise(self, body: bytes) -> list[PaymentEvent]:
        """Map one verified webhook body onto canonical events (``aggregate_id`` from PSP
        metadata where the PSP carries it, else empty for the normaliser to resolve)."""

    def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
        """Canonical events since ``since`` from the PSP's event log (optional)."""
        raise NotImplementedError(f"{self.name} has no event backfill")

    def page_state(self, psp_object_id: str) -> PageState:
        """What the payment page of a ``request_payment`` shows now (optional: a connector
        without payment pages refuses ``request_payment`` commands)."""
        raise NotImplementedError(f"{self.name} has no payment pages")


def supports_backfill(connector: object) -> bool:
    """Whether ``connector`` overrides :meth:`PspConnector.backfill` (reads a PSP event log).

    ``paybus backfill`` asks before it connects to Kafka, so a PSP without an event log is
    refused at once (exit 2) rather than after a producer is set up.
    """
    method = getattr(type(connector), "backfill", None)
    return method is not None and method is not PspConnector.backfill
