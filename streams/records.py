"""Typed Faust records, one per Avro schema in ``schemas/``.

Each record names its codec (``paybus.<Schema>``, registered by :func:`streams.app.build_app`),
so a Faust agent on a paybus topic receives these typed objects, and sends them back out in the
configured Avro wire format. A unit test keeps the fields in step with the ``.avsc`` files.
"""

from __future__ import annotations

from datetime import datetime

import faust

# Faust evaluates annotations at class creation; keep them as real types (no PEP 563 strings
# of names Faust cannot resolve).


def codec_name(schema: str) -> str:
    """Name of the Faust codec registered for ``schema``."""
    return f"paybus.{schema}"


class _PaybusRecord(faust.Record, abstract=True, include_metadata=False):
    """Base: no Faust metadata blob in the value (the Avro schema is the contract)."""


_MAP_FIELDS = frozenset({"metadata", "attributes", "headers"})


class CrmChange(_PaybusRecord, serializer=codec_name("CrmChange")):
    change_id: str
    aggregate_id: str
    aggregate_type: str
    intent: str
    occurred_at: datetime
    source: str
    crm_record_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    method: str | None = None
    gateway: str | None = None
    country: str | None = None
    customer_ref: str | None = None
    payment_method_ref: str | None = None
    mandate_id: str | None = None
    mandate_ref: str | None = None
    payment_id: str | None = None
    charge_date: str | None = None
    description: str | None = None
    reason: str | None = None
    metadata: dict[str, str] | None = None


class PspWebhook(_PaybusRecord, serializer=codec_name("PspWebhook")):
    webhook_id: str
    psp: str
    psp_object_id: str
    received_at: datetime
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


class PaymentCommand(_PaybusRecord, serializer=codec_name("PaymentCommand")):
    command_id: str
    aggregate_id: str
    aggregate_type: str
    operation: str
    psp: str
    issued_at: datetime
    change_id: str | None = None
    crm_record_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    method: str | None = None
    customer_ref: str | None = None
    payment_method_ref: str | None = None
    mandate_ref: str | None = None
    psp_object_id: str | None = None
    payment_id: str | None = None
    charge_date: str | None = None
    description: str | None = None
    reason: str | None = None
    metadata: dict[str, str] | None = None


class PaymentEvent(_PaybusRecord, serializer=codec_name("PaymentEvent")):
    event_id: str
    aggregate_id: str
    aggregate_type: str
    status: str
    occurred_at: datetime
    source: str
    method: str | None = None
    psp: str | None = None
    psp_object_id: str | None = None
    payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    settlement_date: str | None = None
    reason: str | None = None
    attributes: dict[str, str] | None = None


class StatusUpdate(_PaybusRecord, serializer=codec_name("StatusUpdate")):
    event_id: str
    aggregate_id: str
    aggregate_type: str
    to_status: str
    occurred_at: datetime
    seq: int
    source: str
    from_status: str | None = None
    inferred: bool = False
    psp: str | None = None
    psp_object_id: str | None = None
    payment_id: str | None = None
    crm_record_id: str | None = None
    settlement_date: str | None = None
    reason: str | None = None
    attributes: dict[str, str] | None = None


class RetryEnvelope(_PaybusRecord, serializer=codec_name("RetryEnvelope")):
    retry_id: str
    aggregate_id: str
    original_topic: str
    original_partition: int
    original_offset: int
    value: bytes
    attempt: int
    due_at: datetime
    first_failed_at: datetime
    error: str
    stage: str
    key: bytes | None = None


class DeadLetter(_PaybusRecord, serializer=codec_name("DeadLetter")):
    dead_letter_id: str
    original_topic: str
    original_partition: int
    original_offset: int
    value: bytes
    stage: str
    reason: str
    failed_at: datetime
    key: bytes | None = None
    aggregate_id: str | None = None
    error_log: list[str] | None = None
    attempts: int = 1


RECORDS: dict[str, type[_PaybusRecord]] = {
    cls.__name__: cls
    for cls in (
        CrmChange,
        PspWebhook,
        PaymentCommand,
        PaymentEvent,
        StatusUpdate,
        RetryEnvelope,
        DeadLetter,
    )
}
