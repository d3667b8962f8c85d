"""CRM write-back: status updates to Salesforce records, batched and version-guarded.

The API allowance is the scarce resource (a few thousand calls a day on small orgs). Updates
are coalesced per aggregate first: only the newest is written, because the status it carries
already supersedes the older ones. The stored ``Bus_Seq__c`` is the version guard: an update
whose ``seq`` is not above it is a replay or a re-delivery and is skipped, so writing is
idempotent and never moves a record back.

The guard needs the stored ``Bus_Seq__c`` of each record a batch touches. A bounded
:class:`VersionCache` keeps what the CRM holds (``Id``, ``Bus_Seq__c``) of the records this
process read or wrote, so a batch costs one SOQL read per object only for records not cached
(none when all are) plus one sObject Collections call per 200 records written; replays of
cached records cost no call at all.

The guard is read-then-write, not atomic, and the cache skips even the read. Both are safe
because every update of one aggregate travels on one partition, which one writer owns at a
time, and only the bus writes ``Bus_Seq__c``: what this writer last read or wrote is what the
CRM holds. The cache goes when that may no longer hold: all of it on every rebalance
(:meth:`CrmWriter.forget`: another worker may have written meanwhile), a record on any failed
write (a timeout may or may not have written). A cached record found gone (deleted in the CRM)
is read again in the same batch, so it still ends ``not_found``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
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
#: Records the version cache holds by default (at most about 50 MB).
CACHE_RECORDS = 100_000
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


_Known = tuple[float | None, str | None]


class VersionCache:
    """What the CRM holds of the records this writer read or wrote: ``Id`` and ``Bus_Seq__c``.

    Looked up per object by the keys :func:`_key` makes (``id:<18-char id>``, ``ext:<external
    id lowercased>``); the seq is held once per record, so a write through one key shows through
    the other. Least recently used records go beyond ``max_records``. One write at a time.
    """

    def __init__(self, max_records: int = CACHE_RECORDS) -> None:
        if max_records < 0:
            raise ValueError("max_records must be >= 0")
        self.max_records = max_records
        #: (object, Id) -> (stored Bus_Seq__c or None, the record's ext key or None)
        self._records: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._ext: dict[tuple[str, str], str] = {}  # (object, ext key) -> Id
        self.hits = self.misses = 0  # lookups answered / not answered (records to read)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, object_name: str, key: str) -> tuple[str, float | None] | None:
        """``(Id, stored seq)`` of the record ``key`` names, or None when not known."""
        rid = key[3:] if key.startswith("id:") else self._ext.get((object_name, key))
        known = self._records.get((object_name, rid)) if rid else None
        if rid is None or known is None:
            self.misses += 1
            return None
        self.hits += 1
        self._records.move_to_end((object_name, rid))
        return rid, known[0]

    def put(self, object_name: str, rid: str, seq: float | None, ext_key: str | None) -> None:
        """The CRM holds ``seq`` on record ``rid`` (also named ``ext_key``, when known)."""
        old = self._records.pop((object_name, rid), None)
        if old is not None and old[1] and ext_key is None:
            ext_key = old[1]
        elif old is not None and old[1]:
            self._unalias(object_name, old[1], rid)
        self._records[(object_name, rid)] = (seq, ext_key)
        if ext_key:
            self._ext[(object_name, ext_key)] = rid
        while len(self._records) > self.max_records:
            (obj, gone), (_, ext) = self._records.popitem(last=False)
            if ext:
                self._unalias(obj, ext, gone)

    def evict(self, object_name: str, rid: str) -> None:
        """Forget record ``rid``: its next write reads it again."""
        old = self._records.pop((object_name, rid), None)
        if old is not None and old[1]:
            self._unalias(object_name, old[1], rid)

    def _unalias(self, object_name: str, ext_key: str, rid: str) -> None:
        if self._ext.get((object_name, ext_key)) == rid:
            del self._ext[(object_name, ext_key)]


class CrmWriter:
    """Writes batches of :class:`StatusUpdate` to their CRM records (see the module doc)."""

    def __init__(
        self,
        client: SalesforceClient,
        fields: FieldMap | None = None,
        cache_records: int = CACHE_RECORDS,
    ) -> None:
        self.client = client
        self.fields = fields or FieldMap()
        self.cache = VersionCache(cache_records)

    def forget(self) -> None:
        """Drop every cached version (on a rebalance): the next write of each record reads.

        A fresh cache, not a cleared one: a write still running in the worker thread keeps the
        cache it started with, so what it learns lands in the discarded one.
        """
        self.cache = VersionCache(self.cache.max_records)

    def write(self, updates: Sequence[StatusUpdate]) -> WriteReport:
        """Write the newest status of every aggregate in ``updates``; never raises for a
        Salesforce failure: each update's result says what happened and whether to retry."""
        cache = self.cache  # once: a concurrent forget() must not mix two caches in one write
        calls_before, hits, misses = self.client.api_calls, cache.hits, cache.misses
        targets, results = coalesce(updates, self.fields)
        by_object: dict[str, list[Target]] = {}
        for target in targets:
            by_object.setdefault(target.mapping.object_name, []).append(target)
        for group in by_object.values():
            claimed: set[str] = set()  # record ids written (one aggregate per record)
            gone = self._write_object(group, updates, results, cache, claimed)
            if gone:  # cached records the CRM no longer has: now evicted, so read this time
                self._write_object(gone, updates, results, cache, claimed)
        ordered = [results[i] for i in range(len(updates))]
        calls = self.client.api_calls - calls_before
        return WriteReport(ordered, calls, cache.hits - hits, cache.misses - misses)

    def _write_object(
        self,
        targets: list[Target],
        updates: Sequence[StatusUpdate],
        results: dict[int, UpdateResult],
        cache: VersionCache,
        claimed: set[str],
    ) -> list[Target]:
        """Write one object's targets; return the cached ones whose record turned out gone."""
        mapping = targets[0].mapping
        obj = mapping.object_name

        def settle(target: Target, outcome: Outcome, rid: str | None, err: Any = None) -> None:
            winner = UpdateResult(target.winner, outcome, obj, rid, err)
            results[target.winner_index] = winner
            # Superseded updates share a failure (their effect is not in the CRM either);
            # otherwise the newer status stands in for them.
            loser_outcome = outcome if outcome in (Outcome.FAILED, Outcome.NOT_FOUND) else None
            for index in target.losers:
                results[index] = UpdateResult(
                    updates[index],
                    loser_outcome or Outcome.SKIPPED_OLDER,
                    obj,
                    rid,
                    err if loser_outcome else None,
                )

        known: list[tuple[Target, tuple[str, float | None] | None, bool]] = []
        misses: list[Target] = []
        for target in targets:
            hit = cache.get(obj, _key(target))
            if hit is None:
                misses.append(target)
            else:
                known.append((target, hit, True))
        if misses:
            try:
                stored = self._read(mapping, misses, cache)
            except ConnectorError as err:
                for target in misses:
                    settle(target, Outcome.FAILED, target.crm_record_id, err)
            else:
                known += [(t, stored.get(_key(t)), False) for t in misses]
        pending: list[tuple[Target, dict[str, Any], bool]] = []
        for target, version, cached in known:
            if version is None:
                settle(target, Outcome.NOT_FOUND, target.crm_record_id)
                continue
            rid, seq = version
            if seq is not None and seq >= target.winner.seq:
                settle(target, Outcome.SKIPPED_OLDER, rid)
            elif rid in claimed:
                dup = PermanentError(f"two aggregates of one batch map to record {rid}", psp=NAME)
                settle(target, Outcome.FAILED, rid, dup)
            else:
                claimed.add(rid)
                pending.append((target, record_payload(mapping, rid, target.winner), cached))
        gone: list[Target] = []
        for start in range(0, len(pending), MAX_COLLECTION):
            chunk = pending[start : start + MAX_COLLECTION]
            try:
                answers = self.client.update_records(obj, [p for _, p, _ in chunk])
            except ConnectorError as err:
                for target, payload, _ in chunk:
                    cache.evict(obj, payload["Id"])  # may or may not be written: read next time
                    settle(target, Outcome.FAILED, payload["Id"], err)
                continue
            for (target, payload, cached), answer in zip(chunk, answers, strict=True):
                rid = payload["Id"]
                if answer.error is None:
                    ext = None if target.crm_record_id else _key(target)
                    cache.put(obj, rid, float(target.winner.seq), ext)
                    settle(target, Outcome.WRITTEN, rid)
                    continue
                cache.evict(obj, rid)
                settle(target, Outcome.FAILED, rid, answer.error)
                if cached and answer.error.code in GONE_CODES:
                    claimed.discard(rid)
                    gone.append(target)
        return gone

    def _read(
        self, mapping: ObjectMapping, targets: list[Target], cache: VersionCache
    ) -> dict[str, tuple[str, float | None]]:
        """``(Id, stored Bus_Seq__c)`` of the targets' records by :func:`_key`, also put in
        ``cache``; one query unless the ids overflow one URL."""
        ids = sorted({t.crm_record_id for t in targets if t.crm_record_id})
        ext_ids = sorted({t.winner.aggregate_id for t in targets if not t.crm_record_id})
        literals = [("Id", v) for v in ids] + [(mapping.external_id, v) for v in ext_ids]
        stored: dict[str, tuple[str, float | None]] = {}
        select = f"SELECT Id, {mapping.external_id}, {mapping.bus_seq} FROM {mapping.object_name}"
        for chunk in in_chunks([f"{name}\0{value}" for name, value in literals]):
            clauses: dict[str, list[str]] = {}
            for item in chunk:
                name, _, value = item.partition("\0")
                clauses.setdefault(name, []).append(soql_quote(value))
            where = " OR ".join(f"{name} IN ({', '.join(vals)})" for name, vals in clauses.items())
            for row in self.client.query(f"{select} WHERE {where}"):
                rid, seq = str(row["Id"]), row.get(mapping.bus_seq)
                version = (rid, None if seq is None else float(seq))
                stored[f"id:{rid}"] = version
                ext = row.get(mapping.external_id)
                ext_key = f"ext:{str(ext).lower()}" if ext else None
                if ext_key:
                    stored[ext_key] = version
                cache.put(mapping.object_name, rid, version[1], ext_key)
        return stored


def _key(target: Target) -> str:
    """The key naming a target's record: its CRM id when the update carries one."""
    if target.crm_record_id:
        return f"id:{target.crm_record_id}"
    return f"ext:{target.winner.aggregate_id.lower()}"
