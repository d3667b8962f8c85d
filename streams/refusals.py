"""The answer to a cancel the PSP refused, marked so the CRM hears of the refusal.

A connector answers a refused cancel with the payment's actual status (a payment the customer
paid meanwhile, a debit already submitted to the banks) rather than raising: raised, the
refusal became the payment's ``failed``. That status is usually the one the bus already has,
so the sequencer would drop it as a duplicate and the CRM record would keep showing the
request staff made ("Cancel Requested") for good. Marked here with ``REFUSED_ATTRIBUTE`` and a
reason, it is applied as a re-assertion instead (see streams/sequencing.py, rule 1): the
record gets its status back, with the reason in its failure reason field.

Only the answer's last event is kept. A Stripe SEPA debit's answer fills the stages it passed
(``pending_submission``, ``submitted``) at one time, which suits a create; for a refusal, timed
now, they would be judged behind the current status and dead-lettered. If the bus had not yet
seen those stages, the last event is held and the gap reconciled, as for any webhook.
"""

from __future__ import annotations

from streams import page_expiry
from streams.records import PaymentCommand, PaymentEvent
from streams.redaction import redact
from streams.sequencing_state import REFUSED_ATTRIBUTE

#: The status a cancel's answer reports when the cancel took effect.
CANCELLED = "cancelled"


def is_refusal(command: PaymentCommand, events: list[PaymentEvent]) -> bool:
    """True when ``events`` answer a cancel that did not take effect."""
    if command.operation != "cancel" or not events:
        return False
    own = [e for e in events if e.aggregate_id == command.aggregate_id]
    return bool(own) and all(e.status != CANCELLED for e in own)


def is_the_bus_own(command: PaymentCommand) -> bool:
    """A cancel the bus asked for itself (an expired payment page's): no one on staff set
    "Cancel Requested", so a refusal has nothing to undo on the record, and a failure reason
    on a payment its customer paid at the last second would only mislead."""
    return (command.change_id or "").startswith(f"{page_expiry.SOURCE}:")


def refused_answer(
    psp: str, command: PaymentCommand, events: list[PaymentEvent]
) -> list[PaymentEvent]:
    """``events`` as the answer to a refused cancel (see the module doc), or unchanged when
    the cancel took effect, ``command`` is no cancel, or the bus asked for it itself (the
    answer then applies, or is dropped as a duplicate, like any PSP report)."""
    if not is_refusal(command, events) or is_the_bus_own(command):
        return events
    own = [e for e in events if e.aggregate_id == command.aggregate_id]
    last = own[-1]
    reason = last.reason or (
        f"{psp} refused the cancel: the {command.aggregate_type} is already {last.status}"
    )
    # Free text from the PSP (Stripe's message) and the intent: onto Kafka only redacted,
    # like a failed event's reason (streams.agents.common.failed_event).
    marked = last.derive(
        reason=redact(reason)[:500],
        attributes={**(last.attributes or {}), REFUSED_ATTRIBUTE: command.operation},
    )
    return [*(e for e in events if e.aggregate_id != command.aggregate_id), marked]
