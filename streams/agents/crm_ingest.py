"""``POST /events/crm``: CRM changes pushed over HTTP, signed, validated, published durably.

For CRMs (or middleware) that push rather than being polled. The body is one ``CrmChange``
JSON object or a JSON array of them, signed with ``X-Paybus-Signature: t=<unix time>,
sha256=<hex HMAC-SHA256(crm.ingest_secret, "<t>." + raw body)>`` (:func:`sign`); a timestamp
more than ``crm.ingest_tolerance_s`` away is refused, so a captured request cannot be
replayed later. The answer tells the sender what to do next:

* 401: missing or bad signature, or a stale timestamp (nothing published; the body says which);
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
import time
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


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Paybus-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds,
    default now): ``t=<timestamp>,sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``,
    what a sender computes."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},sha256=" + _mac(secret, f"{t}.".encode() + body)


def sign_untimed(secret: str, body: bytes) -> str:
    """The older ``sha256=<hex HMAC of the body>`` form (accepted only where allowed)."""
    return "sha256=" + _mac(secret, body)


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_problem(
    secret: str, body: bytes, header: str | None, *, now: float, tolerance_s: float,
    allow_untimed: bool = False,
) -> str | None:  # fmt: skip
    """Why a signature header is refused, or None when it is good (constant-time compare).

    The signed timestamp must be within ``tolerance_s`` of ``now``: a captured request
    replayed later is refused (its change ids would make most replays harmless, but a
    cancellation would reach the PSP again). The untimed form signs no time, so it is
    accepted only with ``allow_untimed``.

    An empty secret accepts nothing: an HMAC under an empty key is one anyone can compute.
    The comparison is of bytes: ``hmac.compare_digest`` raises TypeError on non-ASCII text,
    and header bytes arrive surrogate-escaped, so a str comparison turned any odd byte into
    a 500 instead of a 401.
    """
    if not secret or not header:
        return f"missing {SIGNATURE_HEADER}"
    parts = dict(p.partition("=")[::2] for p in header.strip().split(","))
    given = parts.get("sha256", "").encode("utf-8", "surrogatepass")
    stamp = parts.get("t")
    if stamp is None:
        if not allow_untimed or set(parts) != {"sha256"}:
            return f"{SIGNATURE_HEADER} needs t=<unix time>,sha256=<HMAC of '<t>.<body>'>"
        want = _mac(secret, body)
    elif not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):  # int() of 4,300+
        # digits raises (a 500); unix seconds stay under 12 digits for 30,000 years
        return f"{SIGNATURE_HEADER} has a bad timestamp"
    else:
        want = _mac(secret, f"{stamp}.".encode() + body)
    if not hmac.compare_digest(want.encode(), given):
        return f"bad {SIGNATURE_HEADER}"
    if stamp is not None and abs(now - int(stamp)) > tolerance_s:
        return f"{SIGNATURE_HEADER} timestamp is more than {tolerance_s:.0f} s from now"
    return None


def signature_ok(secret: str, body: bytes, header: str | None, *, now: float | None = None,
                 tolerance_s: float = 300, allow_untimed: bool = False) -> bool:  # fmt: skip
    """Whether :func:`signature_problem` finds nothing wrong."""
    moment = time.time() if now is None else now
    problem = signature_problem(secret, body, header, now=moment, tolerance_s=tolerance_s,
                                allow_untimed=allow_untimed)  # fmt: skip
    return problem is None


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
        problem = signature_problem(
            secret, body, raw.headers.get(SIGNATURE_HEADER), now=time.time(),
            tolerance_s=crm.ingest_tolerance_s, allow_untimed=crm.ingest_untimed_signatures,
        )  # fmt: skip
        if problem is not None:
            return self._refuse(view, 401, "bad_signature", problem)
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
