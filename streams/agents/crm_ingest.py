"""``POST /events/crm``: CRM changes pushed over HTTP, signed, validated, published durably.

For CRMs (or middleware) that push rather than being polled. The body is one ``CrmChange``
JSON object or a JSON array of them, signed with ``X-Paybus-Signature: sha256=<hex
HMAC-SHA256(crm.ingest_secret, raw body)>``. The answer tells the sender what to do next:

* 401: missing or bad signature (nothing published);
* 400: not JSON, or a record the schema refuses; the message names the record and field, and
  nothing of the body is published (all or nothing, so a fixed resend cannot duplicate);
* 413: body over ``crm.ingest_max_body_bytes``;
* 503: the broker did not take every record; the sender retries (the change ids make a
  partial first attempt harmless downstream);
* 202: every record is durable (acks=all), with the partition and offset of each.

Works with or without Salesforce configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any, cast

from faust.web import Request, Response, View

from streams import metrics
from streams.agents.http_body import read_body
from streams.app import PaybusApp
from streams.errors import ValidationError
from streams.jsonl import to_record
from streams.records import CrmChange
from streams.redaction import sensitive_fields
from streams.topics import partition_key

log = logging.getLogger(__name__)

SOURCE = "ingest"
SIGNATURE_HEADER = "X-Paybus-Signature"
PUBLISH_TIMEOUT_S = 15.0


def sign(secret: str, body: bytes) -> str:
    """The ``X-Paybus-Signature`` value of ``body`` (what a sender computes)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of a ``sha256=<hex>`` signature header.

    An empty secret accepts nothing: an HMAC under an empty key is one anyone can compute.
    The comparison is of bytes: ``hmac.compare_digest`` raises TypeError on non-ASCII text,
    and header bytes arrive surrogate-escaped, so a str comparison turned any odd byte into
    a 500 instead of a 401.
    """
    if not secret or not header or not header.startswith("sha256="):
        return False
    given = header.strip().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(sign(secret, body).encode(), given)


def parse_changes(app: PaybusApp, body: bytes) -> list[dict[str, Any]]:
    """The body's records, each validated against the CrmChange schema, or ValidationError."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"body is not JSON: {exc}") from None
    many = isinstance(data, list)
    items = data if many else [data]
    if not items:
        raise ValidationError("empty array: no changes")
    records = []
    for n, item in enumerate(items):
        try:
            record = to_record(app.avro, "CrmChange", item)
            if found := sensitive_fields(record):  # never onto Kafka; never quoted back
                raise ValidationError(
                    f"{', '.join(found)} holds a card or bank account number; send a token"
                )
        except ValidationError as exc:
            raise ValidationError(f"record {n}: {exc}" if many else str(exc)) from None
        records.append(record)
    return records


class CrmIngest:
    """Attaches the ingest view to the app."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        self.topic = app.topic(
            app.topic_map.crm_changes.name, key_type=str, key_serializer="raw", value_type=CrmChange
        )
        stage = self

        @app.page("/events/crm")
        class CrmEvents(View):
            """POST /events/crm: verify, validate, publish durably, then answer."""

            async def post(self, request: Request) -> Response:
                return await stage.receive(self, request)

    def _refuse(self, view: View, status: int, outcome: str, error: str) -> Response:
        metrics.CRM_CHANGES.labels(SOURCE, outcome).inc()
        return view.json({"error": error}, status=status)

    async def receive(self, view: View, request: Request) -> Response:
        crm = self.app.settings.crm
        limit = crm.ingest_max_body_bytes
        raw = cast(Any, request)
        if raw.content_length is not None and raw.content_length > limit:
            return self._refuse(view, 413, "too_large", f"body over {limit} bytes")
        body = await read_body(raw.content, limit)
        if body is None:
            return self._refuse(view, 413, "too_large", f"body over {limit} bytes")
        secret = crm.ingest_secret.get_secret_value()
        if not signature_ok(secret, body, raw.headers.get(SIGNATURE_HEADER)):
            return self._refuse(view, 401, "bad_signature", f"missing or bad {SIGNATURE_HEADER}")
        try:
            records = parse_changes(self.app, body)
        except ValidationError as exc:
            return self._refuse(view, 400, "malformed", str(exc))
        try:
            futures = []
            for record in records:
                key = partition_key(
                    record["aggregate_type"], record["aggregate_id"], record.get("payment_id")
                )
                futures.append(await self.topic.send(key=key, value=CrmChange(**record)))
            landed = await asyncio.wait_for(asyncio.gather(*futures), timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:  # broker down or refusing: the sender must retry
            log.warning("CRM ingest of %d change(s) not published: %r", len(records), exc)
            return self._refuse(view, 503, "unavailable", "cannot store the changes now; retry")
        metrics.CRM_CHANGES.labels(SOURCE, "published").inc(len(records))
        placed = [
            {"change_id": r["change_id"], "partition": m.partition, "offset": m.offset}
            for r, m in zip(records, landed, strict=True)
        ]
        return view.json({"accepted": len(placed), "records": placed}, status=202)
