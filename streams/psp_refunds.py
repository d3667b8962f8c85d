"""Refunds made at the PSP, not through the bus, on payments the bus made.

Staff refund in the PSP's dashboard every day, and other systems refund through the PSP's
API. Such a refund carries no paybus metadata, so no event about it names a refund aggregate;
dead-lettering them left letters nobody could replay into anything, and paged the DLQ alert
for routine work. Where the payment it refunds is known (the normaliser's link of the
payment, or the connector reading the refund's payment), the refund becomes an aggregate of
its own, ``<psp>-<PSP refund id>``: the same id for every event about it, from a webhook or a
backfill, so its history is sequenced, traced (``paybus trace`` of the payment) and counted
like a refund the bus made.

It names no CRM record. The payment's record is not the refund's (the CRM writer would put
a refund status on a payment), and the CRM writer creates no records, so its status updates
end ``not_found`` there. The payment's record learns of the refund where the PSP reports it
on the payment itself (Stripe's ``charge.refunded``).
"""

from __future__ import annotations

from connectors.base import unmarked
from streams.records import PaymentEvent

#: The attribute marking an event of a refund made at the PSP.
ORIGIN_ATTRIBUTE = "refund_origin"


def aggregate_id(psp: str, refund_id: str) -> str:
    """The aggregate id of a refund made at ``psp``."""
    return f"{psp}-{refund_id}"


def resolve(event: PaymentEvent) -> PaymentEvent | None:
    """``event`` (a refund event naming its payment's aggregate but no refund aggregate) as
    an event of the refund's own aggregate; ``event`` itself when it names one already;
    ``None`` when it cannot be named (no payment, PSP or PSP refund id)."""
    if event.aggregate_id:
        return event
    if event.aggregate_type != "refund" or not (
        event.payment_id and event.psp and event.psp_object_id
    ):
        return None
    attributes = unmarked(event.attributes)  # its payment is the bus's
    attributes.pop("crm_record_id", None)
    attributes[ORIGIN_ATTRIBUTE] = "psp"
    return event.derive(
        aggregate_id=aggregate_id(event.psp, event.psp_object_id), attributes=attributes
    )
