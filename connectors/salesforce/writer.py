"""CRM write-back: status updates to Salesforce records, batched and version-guarded.

The API allowance is the scarce resource (a few thousand calls a day on small orgs), so a batch
of updates costs one SOQL read per object (the stored ``Bus_Seq__c`` of every record touched)
plus one sObject Collections call per 200 records written. Updates are coalesced per aggregate
first: only the newest is written, because the status it carries already supersedes the older
ones. The stored ``Bus_Seq__c`` is the version guard: an update whose ``seq`` is not above it is
a replay or a re-delivery and is skipped, so writing is idempotent and never moves a record back.

The guard is read-then-write, not atomic; that is safe because every update of one aggregate
travels on one partition and so reaches one writer at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from connectors.errors import ConnectorError, PermanentError
from streams.records import StatusUpdate

from .client import MAX_COLLECTION, NAME, SalesforceClient, id18, soql_quote
from .settings import FieldMap, ObjectMapping

#: Budget for the quoted literals of one ``IN (...)`` read, so the GET URL stays well inside
#: Salesforce's 16 KB limit once URL-encoded; 200 record ids take about 4,200 characters.
MAX_LITERAL_CHARS = 8000
_ID_RE = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")
# Card numbers (13-19 digits, optionally grouped) and IBANs never reach the CRM, even inside a
# PSP's failure message.
_PAN_RE = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


class Outcome(StrEnum):
    """What happened to one input update."""

    WRITTEN = "written"
    SKIPPED_OLDER = "skipped_older"
    FAILED = "failed"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class UpdateResult:
    """The outcome of one input update, with the record and error where known."""

    update: StatusUpdate
    outcome: Outcome
    object_name: str | None = None
    record_id: str | None = None
    error: ConnectorError | None = None

    @property
    def should_retry(self) -> bool:
        """True when the same update, sent again later, may succeed."""
        return self.error is not None and self.error.should_retry


@dataclass
class WriteReport:
    """Per input update (in input order) what happened, and the API calls it cost."""

    results: list[UpdateResult]
    api_calls: int

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    def counts(self) -> dict[str, int]:
        return {o.value: self.count(o) for o in Outcome}

    def retryable(self) -> list[StatusUpdate]:
        """Updates to send again (after backoff): failed with ``should_retry``."""
        return [r.update for r in self.results if r.outcome is Outcome.FAILED and r.should_retry]

    def permanent_failures(self) -> list[UpdateResult]:
        """Failures retrying cannot fix (validation rules, bad ids): alert a human."""
        return [r for r in self.results if r.outcome is Outcome.FAILED and not r.should_retry]


@dataclass
class Target:
    """One aggregate of a batch: its newest update and the older ones it supersedes."""

    mapping: ObjectMapping
    winner: StatusUpdate
    winner_index: int
    crm_record_id: str | None
    losers: list[int] = field(default_factory=list)


def coalesce(
    updates: Sequence[StatusUpdate], fields: FieldMap
) -> tuple[list[Target], dict[int, UpdateResult]]:
    """Group updates per aggregate, keeping the highest ``seq`` (the first of equal ones).

    Returns the targets and the results already decided (aggregate types the CRM does not
    hold, malformed record ids).
    """
    decided: dict[int, UpdateResult] = {}
    targets: dict[tuple[str, str], Target] = {}
    for index, update in enumerate(updates):
        mapping = fields.for_type(update.aggregate_type)
        if mapping is None:
            error = PermanentError(f"no CRM object for {update.aggregate_type!r}", psp=NAME)
            decided[index] = UpdateResult(update, Outcome.FAILED, error=error)
            continue
        if update.crm_record_id and not _ID_RE.match(update.crm_record_id):
            error = PermanentError(
                f"malformed crm_record_id {update.crm_record_id!r}", psp=NAME, code="MALFORMED_ID"
            )
            decided[index] = UpdateResult(update, Outcome.FAILED, mapping.object_name, error=error)
            continue
        key = (update.aggregate_type, update.aggregate_id)
        target = targets.get(key)
        if target is None:
            targets[key] = Target(mapping, update, index, _rid(update))
        elif update.seq > target.winner.seq:
            target.losers.append(target.winner_index)
            target.winner, target.winner_index = update, index
            target.crm_record_id = _rid(update) or target.crm_record_id
        else:
            target.losers.append(index)
            target.crm_record_id = target.crm_record_id or _rid(update)
    return list(targets.values()), decided


def _rid(update: StatusUpdate) -> str | None:
    return id18(update.crm_record_id) if update.crm_record_id else None


def redact(text: str) -> str:
    """``text`` with anything shaped like a card number or an IBAN masked."""
    return _IBAN_RE.sub("[redacted]", _PAN_RE.sub("[redacted]", text))


def record_payload(mapping: ObjectMapping, record_id: str, update: StatusUpdate) -> dict[str, Any]:
    """The fields written for one update (absent values leave the record's own untouched)."""
    payload: dict[str, Any] = {
        "Id": record_id,
        mapping.status: update.to_status,
        mapping.bus_seq: update.seq,
    }
    if update.psp_object_id:
        payload[mapping.psp_id] = update.psp_object_id[: mapping.psp_id_length]
    if update.settlement_date:
        payload[mapping.settlement_date] = update.settlement_date
    if update.reason:
        payload[mapping.failure_reason] = redact(update.reason)[: mapping.failure_reason_length]
    return payload


def in_chunks(values: Sequence[str], budget: int = MAX_LITERAL_CHARS) -> list[list[str]]:
    """Split values so each chunk's quoted literals fit in ``budget`` characters."""
    chunks: list[list[str]] = []
    size = budget + 1
    for value in values:
        cost = len(soql_quote(value)) + 1
        if size + cost > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += cost
    return chunks


class CrmWriter:
    """Writes batches of :class:`StatusUpdate` to their CRM records (see the module doc)."""

    def __init__(self, client: SalesforceClient, fields: FieldMap | None = None) -> None:
        self.client = client
        self.fields = fields or FieldMap()

    def write(self, updates: Sequence[StatusUpdate]) -> WriteReport:
        """Write the newest status of every aggregate in ``updates``; never raises for a
        Salesforce failure: each update's result says what happened and whether to retry."""
        calls_before = self.client.api_calls
        targets, results = coalesce(updates, self.fields)
        by_object: dict[str, list[Target]] = {}
        for target in targets:
            by_object.setdefault(target.mapping.object_name, []).append(target)
        for group in by_object.values():
            self._write_object(group, updates, results)
        ordered = [results[i] for i in range(len(updates))]
        return WriteReport(ordered, self.client.api_calls - calls_before)

    def _write_object(
        self,
        targets: list[Target],
        updates: Sequence[StatusUpdate],
        results: dict[int, UpdateResult],
    ) -> None:
        mapping = targets[0].mapping

        def settle(target: Target, outcome: Outcome, rid: str | None, err: Any = None) -> None:
            winner = UpdateResult(target.winner, outcome, mapping.object_name, rid, err)
            results[target.winner_index] = winner
            # Superseded updates share a failure (their effect is not in the CRM either);
            # otherwise the newer status stands in for them.
            loser_outcome = outcome if outcome in (Outcome.FAILED, Outcome.NOT_FOUND) else None
            for index in target.losers:
                results[index] = UpdateResult(
                    updates[index],
                    loser_outcome or Outcome.SKIPPED_OLDER,
                    mapping.object_name,
                    rid,
                    err if loser_outcome else None,
                )

        try:
            stored = self._read(mapping, targets)
        except ConnectorError as err:
            for target in targets:
                settle(target, Outcome.FAILED, target.crm_record_id, err)
            return
        pending: list[tuple[Target, dict[str, Any]]] = []
        claimed: set[str] = set()
        for target in targets:
            row = _match(stored, target)
            if row is None:
                settle(target, Outcome.NOT_FOUND, target.crm_record_id)
                continue
            rid = str(row["Id"])
            seq = row.get(mapping.bus_seq)
            if seq is not None and float(seq) >= target.winner.seq:
                settle(target, Outcome.SKIPPED_OLDER, rid)
            elif rid in claimed:
                dup = PermanentError(f"two aggregates of one batch map to record {rid}", psp=NAME)
                settle(target, Outcome.FAILED, rid, dup)
            else:
                claimed.add(rid)
                pending.append((target, record_payload(mapping, rid, target.winner)))
        for start in range(0, len(pending), MAX_COLLECTION):
            chunk = pending[start : start + MAX_COLLECTION]
            try:
                answers = self.client.update_records(mapping.object_name, [p for _, p in chunk])
            except ConnectorError as err:
                for target, payload in chunk:
                    settle(target, Outcome.FAILED, payload["Id"], err)
                continue
            for (target, payload), answer in zip(chunk, answers, strict=True):
                if answer.error is None:
                    settle(target, Outcome.WRITTEN, payload["Id"])
                else:
                    settle(target, Outcome.FAILED, payload["Id"], answer.error)

    def _read(self, mapping: ObjectMapping, targets: list[Target]) -> dict[str, dict[str, Any]]:
        """Stored ``Bus_Seq__c`` of the targets' records, keyed ``id:<18-char id>`` and
        ``ext:<external id lowercased>``; one query unless the ids overflow one URL."""
        ids = sorted({t.crm_record_id for t in targets if t.crm_record_id})
        ext_ids = sorted({t.winner.aggregate_id for t in targets if not t.crm_record_id})
        literals = [("Id", v) for v in ids] + [(mapping.external_id, v) for v in ext_ids]
        stored: dict[str, dict[str, Any]] = {}
        select = f"SELECT Id, {mapping.external_id}, {mapping.bus_seq} FROM {mapping.object_name}"
        for chunk in in_chunks([f"{name}\0{value}" for name, value in literals]):
            clauses: dict[str, list[str]] = {}
            for item in chunk:
                name, _, value = item.partition("\0")
                clauses.setdefault(name, []).append(soql_quote(value))
            where = " OR ".join(f"{name} IN ({', '.join(vals)})" for name, vals in clauses.items())
            for row in self.client.query(f"{select} WHERE {where}"):
                stored[f"id:{row['Id']}"] = row
                if row.get(mapping.external_id):
                    stored[f"ext:{str(row[mapping.external_id]).lower()}"] = row
        return stored


def _match(stored: dict[str, dict[str, Any]], target: Target) -> dict[str, Any] | None:
    if target.crm_record_id:
        return stored.get(f"id:{target.crm_record_id}")
    return stored.get(f"ext:{target.winner.aggregate_id.lower()}")
