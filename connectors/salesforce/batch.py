"""What a batch of status updates becomes before it is written: pure, no I/O.

:func:`coalesce` keeps the newest update per aggregate (the status it carries supersedes the
older ones, which share its outcome); :func:`record_payload` is the fields one record gets;
:func:`redact` (:mod:`streams.redaction`) masks card and account numbers in anything bound
for the CRM or an e-mail;
:func:`in_chunks` keeps a SOQL ``IN (...)`` inside the URL limit. :class:`UpdateResult` and
:class:`WriteReport` say what happened to each input update.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from connectors.errors import ConnectorError, PermanentError
from streams.page_links import PAGE_URL_ATTRIBUTE
from streams.records import StatusUpdate
from streams.redaction import redact  # card and account numbers never reach the CRM

from .client import id18, soql_quote
from .error_map import NAME
from .settings import FieldMap, ObjectMapping

#: Budget for the quoted literals of one ``IN (...)`` read, so the GET URL stays well inside
#: Salesforce's 16 KB limit once URL-encoded; 200 record ids take about 4,200 characters.
MAX_LITERAL_CHARS = 8000
_ID_RE = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")
#: Per-record errors of an update that say the record is gone: a cached record is read again.
GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})


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
    """Per input update (in input order) what happened, and the API calls it cost; records
    judged from the version cache (no read) and records read."""

    results: list[UpdateResult]
    api_calls: int
    cache_hits: int = 0
    cache_misses: int = 0

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
            targets[key] = Target(mapping, update, index, record_id_of(update))
        elif update.seq > target.winner.seq:
            target.losers.append(target.winner_index)
            target.winner, target.winner_index = update, index
            target.crm_record_id = record_id_of(update) or target.crm_record_id
        else:
            target.losers.append(index)
            target.crm_record_id = target.crm_record_id or record_id_of(update)
    return list(targets.values()), decided


def record_id_of(update: StatusUpdate) -> str | None:
    return id18(update.crm_record_id) if update.crm_record_id else None


def record_payload(
    mapping: ObjectMapping, record_id: str | None, update: StatusUpdate
) -> dict[str, Any]:
    """The fields written for one update (absent values leave the record's own untouched).

    The record is named by ``record_id``, or when that is None by its external id (the
    aggregate id), for an upsert."""
    key = ("Id", record_id) if record_id else (mapping.external_id, update.aggregate_id)
    payload: dict[str, Any] = {
        key[0]: key[1],
        mapping.status: update.to_status,
        mapping.bus_seq: update.seq,
    }
    if update.psp_object_id:
        payload[mapping.psp_id] = update.psp_object_id[: mapping.psp_id_length]
    if update.settlement_date:
        payload[mapping.settlement_date] = update.settlement_date
    if update.reason:
        payload[mapping.failure_reason] = redact(update.reason)[: mapping.failure_reason_length]
    page = (update.attributes or {}).get(PAGE_URL_ATTRIBUTE)
    if page and mapping.payment_page_url:
        payload[mapping.payment_page_url] = page
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


def settle(
    updates: Sequence[StatusUpdate],
    results: dict[int, UpdateResult],
    target: Target,
    outcome: Outcome,
    rid: str | None,
    err: ConnectorError | None = None,
) -> None:
    """Record a target's outcome for its winner and the older updates it superseded."""
    obj = target.mapping.object_name
    results[target.winner_index] = UpdateResult(target.winner, outcome, obj, rid, err)
    # Superseded updates share a failure (their effect is not in the CRM either); otherwise
    # the newer status stands in for them.
    loser_outcome = outcome if outcome in (Outcome.FAILED, Outcome.NOT_FOUND) else None
    for index in target.losers:
        results[index] = UpdateResult(
            updates[index],
            loser_outcome or Outcome.SKIPPED_OLDER,
            obj,
            rid,
            err if loser_outcome else None,
        )


def record_key(target: Target) -> str:
    """The key naming a target's record: its CRM id when the update carries one."""
    if target.crm_record_id:
        return f"id:{target.crm_record_id}"
    return f"ext:{target.winner.aggregate_id.lower()}"
