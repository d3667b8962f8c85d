"""The sequencing agent's conversions: wire records to the pure engine's and back.

Kept apart from the agent (``streams.agents.sequencer``) so the Faust wiring reads on its own.
``status_update_record`` builds the Avro record as a plain dict, because the agent encodes
status updates straight to bytes and sends them in batches (no Faust record per update).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.records import PaymentEvent, StatusUpdate
from streams.sequencing import StatusChange
from streams.sequencing_state import AggregateState, Event
from streams.state_codec import decode_state

__all__ = [
    "RECONCILE_ATTR",
    "from_engine_event",
    "load_state",
    "status_update_record",
    "to_engine_event",
    "to_status_update",
]

#: Attribute marking a reconcile request published by the timer (not a PSP event).
RECONCILE_ATTR = "paybus_reconcile"
#: PaymentEvent fields carried through the engine in ``Event.attributes``.
_CARRIED = ("psp", "psp_object_id", "payment_id", "settlement_date", "reason", "currency")


def to_engine_event(value: PaymentEvent | Mapping[str, Any]) -> Event:
    """A PaymentEvent (the record, or the decoded Avro mapping the agent reads without building
    one) as the pure engine's Event (extra fields ride in ``attributes``)."""
    fields: Mapping[str, Any] = value if isinstance(value, Mapping) else value.asdict()
    attributes: dict[str, str] = dict(fields.get("attributes") or {})
    for name in _CARRIED:
        field_value = fields.get(name)
        if field_value is not None:
            attributes[name] = str(field_value)
    if fields.get("amount_minor") is not None:
        attributes["amount_minor"] = str(fields["amount_minor"])
    return Event(
        event_id=fields["event_id"],
        aggregate_id=fields["aggregate_id"],
        aggregate_type=fields["aggregate_type"],
        status=fields["status"],
        occurred_at=fields["occurred_at"],
        source=fields["source"],
        method=fields.get("method"),
        attributes=attributes,
    )


def from_engine_event(event: Event) -> dict[str, Any]:
    """The ``PaymentEvent`` Avro record of an engine Event, as a plain dict (the inverse of
    :func:`to_engine_event`).

    A held event keeps only its engine form in the table; when it is dead-lettered later
    (evicted from a full held list, or unreachable once another event moved its aggregate on),
    this rebuilds the record it arrived as, so the letter carries that event and a replay
    judges it again.
    """
    attrs = dict(event.attributes)
    carried = {name: attrs.pop(name, None) for name in _CARRIED}
    amount = attrs.pop("amount_minor", None)
    return {
        "event_id": event.event_id,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "status": event.status,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "method": event.method,
        **carried,
        "amount_minor": int(amount) if amount is not None else None,
        "attributes": attrs,
    }


def status_update_record(change: StatusChange) -> dict[str, Any]:
    """The ``StatusUpdate`` Avro record of one applied transition, as a plain dict.

    The agent encodes this straight to bytes (no Faust record in between); the field set is
    the one :class:`StatusUpdate` declares, so :func:`to_status_update` builds the same.
    """
    attrs = dict(change.attributes)
    carried = {name: attrs.pop(name, None) for name in _CARRIED}
    attrs.pop(RECONCILE_ATTR, None)
    return {
        "event_id": change.event_id,
        "aggregate_id": change.aggregate_id,
        "aggregate_type": change.aggregate_type,
        "from_status": change.from_status,
        "to_status": change.to_status,
        "occurred_at": change.occurred_at,
        "seq": change.seq,
        "inferred": change.inferred,
        "source": change.source,
        "psp": carried["psp"],
        "psp_object_id": carried["psp_object_id"],
        "payment_id": carried["payment_id"],
        "crm_record_id": attrs.pop("crm_record_id", None),
        "settlement_date": carried["settlement_date"],
        "reason": carried["reason"],
        "attributes": attrs,
    }


def to_status_update(change: StatusChange) -> StatusUpdate:
    """The wire record of one applied transition (as a Faust record)."""
    return StatusUpdate(**status_update_record(change))


def load_state(aggregate_id: str, stored: bytes | None) -> AggregateState | None:
    """The state a table value holds: the compact form, or the JSON form of earlier releases
    (a changelog written before the compact form still recovers)."""
    if not stored:
        return None
    if stored[:1] == b"{":
        return AggregateState.from_dict(json.loads(stored))
    return decode_state(aggregate_id, stored)
