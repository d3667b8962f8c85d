"""Expired payment pages: which payments are due to be cancelled, and the intent that does it.

Pure (no I/O); the janitor (:mod:`streams.agents.ops`) runs it on a timer.

A ``request_payment`` leaves a PaymentIntent waiting for its customer and the CRM record in
``pending_customer_approval`` with a signed link (:mod:`streams.page_links`) that stops
opening the page at its expiry (410). Left alone, the PSP object stays open (a customer holding
its client secret could still pay, long after the bus said the request was over) and the record
waits forever. So once the link is dead, the bus asks for the payment to be cancelled the way
anyone would: a ``cancel`` intent on ``paybus.crm.changes``. The router sends it where the
payment went (its gateway table), the connector cancels the PSP object and reports
``cancelled``, and the reason carried on the intent reaches the record's failure reason.

The intent is a function of the aggregate and the link's expiry only: its change id, so its
command id and the PSP idempotency key, are the same however often it is published (after a
crash, by two workers holding the same table partition), and a repeat is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.page_links import PAGE_URL_ATTRIBUTE, link_expiry
from streams.records import CrmChange

#: ``source`` of the cancel intents (and so a label value of the router's counters).
SOURCE = "page-expiry"
#: The only status a page payment is cancelled from: past it the customer has paid or is
#: paying (``pending_submission``: Stripe's ``processing``), and Stripe refuses a cancel.
WAITING = "pending_customer_approval"
#: The janitor entry's key for the link's expiry (unix seconds).
EXPIRES_KEY = "page_expires"

#: Outcomes counted in ``paybus_page_expiry_total``.
REQUESTED = "requested"  # a cancel intent published for a payment whose link expired
REQUESTED_AGAIN = "requested_again"  # published again: still waiting a janitor period later
FAILED = "failed"  # could not be published; the next check tries again
CANCELLED = "cancelled"  # the payment's next status after the request: cancelled
OVERTAKEN = "overtaken"  # ... anything else (paid, or failed, at the last second)


def expires_of(attributes: Mapping[str, str] | None) -> int | None:
    """The expiry of the page link a status update carries, if it carries one."""
    link = (attributes or {}).get(PAGE_URL_ATTRIBUTE)
    return link_expiry(link) if link else None


def is_due(entry: Mapping[str, Any], now: datetime, grace: timedelta) -> bool:
    """A payment still waiting for its customer whose page link expired ``grace`` ago or more.

    The grace lets a customer who paid at the last second be seen paid first: their payment's
    webhook is on its way, and a cancel sent before it arrives would be refused by the PSP
    anyway (the connector then reports the payment's actual status)."""
    if entry.get("type") != "payment" or entry.get("status") != WAITING:
        return False
    expires = entry.get(EXPIRES_KEY)
    if not isinstance(expires, int) or isinstance(expires, bool):
        return False  # not a page's payment (or tracked before the janitor kept expiries)
    return now >= datetime.fromtimestamp(expires, UTC) + grace


def decide(
    entry: Mapping[str, Any],
    now: datetime,
    grace: timedelta,
    requested_at: datetime | None,
    again_after: timedelta,
) -> str | None:
    """What one check does with one janitor entry: publish a cancel intent (``REQUESTED``,
    or ``REQUESTED_AGAIN`` when one was published ``again_after`` ago and the payment still
    waits: a cancel parked until its retries ran out), or nothing (None: not due, or already
    asked recently; its outcome is counted when the payment's next status arrives)."""
    if not is_due(entry, now, grace):
        return None
    if requested_at is None:
        return REQUESTED
    return REQUESTED_AGAIN if now - requested_at >= again_after else None


def change_id(aggregate_id: str, expires: int) -> str:
    """The intent's change id: from the aggregate and the link's expiry, never random, so a
    re-published intent is the same change (same command id, same PSP idempotency key)."""
    return f"{SOURCE}:{aggregate_id}:{expires}"


def reason(expires: int) -> str:
    """What the CRM record's failure reason says."""
    at = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"payment page link expired at {at}"


def cancel_intent(aggregate_id: str, entry: Mapping[str, Any]) -> CrmChange:
    """The ``cancel`` intent for the payment of ``entry`` (a due janitor entry).

    No gateway: the router sends a cancel where the payment went (its gateway table), and the
    connector worker finds the PSP object from its own table. ``occurred_at`` is the link's
    expiry (when the request ended), so the whole record is a function of its inputs."""
    expires = int(entry[EXPIRES_KEY])
    crm_record_id = entry.get("crm_record_id")
    return CrmChange(
        change_id=change_id(aggregate_id, expires),
        aggregate_id=aggregate_id,
        aggregate_type="payment",
        intent="cancel",
        occurred_at=datetime.fromtimestamp(expires, UTC),
        source=SOURCE,
        crm_record_id=str(crm_record_id) if crm_record_id else None,
        reason=reason(expires),
        metadata={},
    )
