"""CRM source: new and changed Payment, Mandate and Refund records as ``CrmChange`` values.

Each object is read in ``(SystemModstamp, Id)`` order from a keyset cursor, so records sharing
one SystemModstamp across a page boundary are neither skipped nor read twice, and a restart
from the stored watermark resumes exactly where the last committed batch ended. The bus's own
write-backs (records last modified by the integration user) are filtered out in the query, so
writing a status back never comes round again as a change (no echo loop).

Delivery is at-least-once: :meth:`ChangePoller.fetch` never moves the watermark; the caller
publishes the batch and then calls :meth:`ChangePoller.commit`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Protocol

from streams.routing import MINOR_DIGITS

from .client import SalesforceClient, soql_quote
from .error_map import NAME
from .settings import FieldMap, ObjectMapping

#: Status values with which staff ask the bus for something (compared case-insensitively).
NEW_STATUSES = frozenset({"", "new"})
CANCEL_STATUSES = frozenset({"cancel requested"})


@dataclass(frozen=True)
class Cursor:
    """Position in one object: the last record read, as (SystemModstamp, Id)."""

    modstamp: dt.datetime
    record_id: str


@dataclass(frozen=True)
class Watermark:
    """Where each object's reading stands; objects not in ``cursors`` start at ``since``."""

    cursors: Mapping[str, Cursor] = field(default_factory=dict)

    def to_json(self) -> str:
        """A compact JSON string (what a compacted topic or a file stores)."""
        return json.dumps(
            {
                obj: {"modstamp": c.modstamp.isoformat(), "id": c.record_id}
                for obj, c in sorted(self.cursors.items())
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls(
            {
                obj: Cursor(dt.datetime.fromisoformat(c["modstamp"]), c["id"])
                for obj, c in data.items()
            }
        )


class WatermarkStore(Protocol):
    """Durable home of the poller's watermark (a compacted Kafka topic in production)."""

    def load(self) -> Watermark | None: ...

    def save(self, watermark: Watermark) -> None: ...


class MemoryWatermarkStore:
    """Keeps the watermark in memory (tests; a restart starts over)."""

    def __init__(self, watermark: Watermark | None = None) -> None:
        self.watermark = watermark

    def load(self) -> Watermark | None:
        return self.watermark

    def save(self, watermark: Watermark) -> None:
        self.watermark = watermark


class FileWatermarkStore:
    """Keeps the watermark in a JSON file, replaced atomically on every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> Watermark | None:
        try:
            return Watermark.from_json(self.path.read_text())
        except FileNotFoundError:
            return None

    def save(self, watermark: Watermark) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(watermark.to_json())
        tmp.replace(self.path)


@dataclass(frozen=True)
class ChangeBatch:
    """Changes read by one fetch, and the watermark to commit once they are published."""

    changes: list[dict[str, Any]]
    watermark: Watermark
    #: Records read that carry no intent (e.g. a staff edit of a record already in flight).
    ignored: int = 0


def parse_datetime(text: str) -> dt.datetime:
    """A Salesforce datetime (``...T..:..:..SSS+0000`` or ``Z``) as an aware UTC datetime."""
    value = text.strip().replace("Z", "+00:00")
    if len(value) > 5 and value[-5] in "+-" and value[-3] != ":":
        value = f"{value[:-2]}:{value[-2:]}"
    parsed = dt.datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def soql_datetime(value: dt.datetime) -> str:
    """A SOQL datetime literal with milliseconds, in UTC."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_minor(amount: Any, currency: str | None) -> int | None:
    """Decimal major units (as Salesforce returns a currency field) to integer minor units."""
    if amount is None:
        return None
    digits = MINOR_DIGITS.get((currency or "").upper(), 2)
    scaled = Decimal(str(amount)) * (10**digits)
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


def _label(value: Any) -> str | None:
    """``Direct Debit`` -> ``direct_debit``; empty -> None."""
    text = str(value or "").strip().lower().replace(" ", "_").replace("-", "_")
    return text or None


def intent_of(mapping: ObjectMapping, record: Mapping[str, Any]) -> str | None:
    """What staff want from a record, judged from its state; None when nothing is asked."""
    status = str(record.get(mapping.status) or "").strip().lower()
    if status in CANCEL_STATUSES:
        return "cancel"
    if status not in NEW_STATUSES:
        return None
    if mapping.aggregate_type == "mandate":
        return "create_mandate"
    if record.get(mapping.amount) is None:
        return None  # a payment or refund without an amount is not ready yet
    if mapping.aggregate_type == "refund":
        return "refund"
    token = record.get(mapping.payment_method_ref) if mapping.payment_method_ref else None
    if _label(record.get(mapping.method)) == "card" and not token:
        # A card payment with no saved card: the customer pays on a payment page. Only when
        # the record says card: one with no method at all is no request to put to Stripe.
        return "request_payment"
    return "create_payment"


def change_id(record_id: str, modstamp: str) -> str:
    """Stable id of one version of a record: the same read twice gives the same change."""
    digest = hashlib.sha256(f"{record_id}|{modstamp}".encode()).hexdigest()[:24]
    return f"sf-{digest}"


def to_change(
    mapping: ObjectMapping, record: Mapping[str, Any], payment_ids: Mapping[str, str]
) -> dict[str, Any] | None:
    """The ``CrmChange`` fields for a record, or None when it asks for nothing."""
    intent = intent_of(mapping, record)
    if intent is None:
        return None
    rid = str(record["Id"])
    currency = str(record.get(mapping.currency) or "").upper() or None
    lookup = record.get(mapping.payment_lookup) if mapping.payment_lookup else None
    return {
        "change_id": change_id(rid, str(record["SystemModstamp"])),
        "aggregate_id": str(record.get(mapping.external_id) or rid),
        "aggregate_type": mapping.aggregate_type,
        "intent": intent,
        "occurred_at": parse_datetime(str(record["SystemModstamp"])),
        "source": NAME,
        "crm_record_id": rid,
        "amount_minor": to_minor(record.get(mapping.amount), currency),
        "currency": currency,
        "method": _label(record.get(mapping.method)),
        "gateway": _label(record.get(mapping.gateway)),
        **{
            key: (str(record[name]) if record.get(name) not in (None, "") else None)
            for key, name in mapping.optional_fields.items()
            if name
        },
        "mandate_id": None,
        "payment_id": payment_ids.get(str(lookup)[:15], str(lookup)) if lookup else None,
        "description": record.get("Name"),
        "metadata": {"salesforce_object": mapping.object_name},
    }


class ChangePoller:
    """Reads changed records of the three objects since the stored watermark."""

    def __init__(
        self,
        client: SalesforceClient,
        store: WatermarkStore,
        fields: FieldMap | None = None,
        *,
        integration_user_id: str | None = None,
        integration_username: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 200,
    ) -> None:
        """``since``: where objects with no stored cursor start (None: from the beginning).
        The integration user is given by id, or by user name and looked up once."""
        if integration_user_id is None and integration_username is None:
            raise ValueError("the integration user is needed to filter out the bus's own writes")
        self.client = client
        self.store = store
        self.fields = fields or FieldMap()
        self.since = since
        self.limit = limit
        self._user_id = integration_user_id
        self._username = integration_username
        self._watermark = store.load() or Watermark()

    @property
    def watermark(self) -> Watermark:
        """The last committed watermark."""
        return self._watermark

    def integration_user_id(self) -> str:
        if self._user_id is None:
            assert self._username is not None
            found = self.client.user_id(self._username)
            if found is None:
                raise ValueError(f"no Salesforce user {self._username!r}")
            self._user_id = found
        return self._user_id

    def query_for(self, mapping: ObjectMapping, cursor: Cursor | None) -> str:
        """The keyset query of one object after ``cursor``."""
        conditions = [f"LastModifiedById != {soql_quote(self.integration_user_id())}"]
        if cursor is not None:
            stamp = soql_datetime(cursor.modstamp)
            conditions.append(
                f"(SystemModstamp > {stamp} OR "
                f"(SystemModstamp = {stamp} AND Id > {soql_quote(cursor.record_id)}))"
            )
        elif self.since is not None:
            conditions.append(f"SystemModstamp > {soql_datetime(self.since)}")
        return (
            f"SELECT {', '.join(mapping.poll_fields)} FROM {mapping.object_name} "
            f"WHERE {' AND '.join(conditions)} ORDER BY SystemModstamp, Id LIMIT {self.limit}"
        )

    def fetch(self) -> ChangeBatch:
        """Up to ``limit`` records per object after the watermark, as changes (oldest first).

        Does not move the watermark: publish the changes, then :meth:`commit` the batch.
        """
        cursors = dict(self._watermark.cursors)
        changes: list[dict[str, Any]] = []
        ignored = 0
        for mapping in self.fields.objects():
            rows = self.client.query(self.query_for(mapping, cursors.get(mapping.object_name)))
            if not rows:
                continue
            last = rows[-1]
            cursors[mapping.object_name] = Cursor(
                parse_datetime(str(last["SystemModstamp"])), str(last["Id"])
            )
            payment_ids = self._payment_ids(mapping, rows)
            for row in rows:
                change = to_change(mapping, row, payment_ids)
                if change is None:
                    ignored += 1
                else:
                    changes.append(change)
        changes.sort(key=lambda c: (c["occurred_at"], c["crm_record_id"]))
        return ChangeBatch(changes, Watermark(cursors), ignored)

    def commit(self, batch: ChangeBatch) -> None:
        """Store the batch's watermark: its changes will not be read again."""
        self.store.save(batch.watermark)
        self._watermark = batch.watermark

    def _payment_ids(self, mapping: ObjectMapping, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Aggregate ids of the payments the refunds point at (their external id where set)."""
        if not mapping.payment_lookup:
            return {}
        ids = sorted(
            {str(r[mapping.payment_lookup]) for r in rows if r.get(mapping.payment_lookup)}
        )
        if not ids:
            return {}
        payment = self.fields.payment
        found = self.client.query(
            f"SELECT Id, {payment.external_id} FROM {payment.object_name} "
            f"WHERE Id IN ({', '.join(soql_quote(i) for i in ids)})"
        )
        return {str(r["Id"])[:15]: str(r.get(payment.external_id) or r["Id"]) for r in found}
