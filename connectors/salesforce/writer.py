"""CRM write-back: status updates to Salesforce records, batched and version-guarded.

The API allowance is the scarce resource (a few thousand calls a day on small orgs). Updates
are coalesced per aggregate first: only the newest is written, because the status it carries
already supersedes the older ones. The stored ``Bus_Seq__c`` is the version guard: an update
whose ``seq`` is not above it is a replay or a re-delivery and is skipped, so writing is
idempotent and never moves a record back.

The guard needs the stored ``Bus_Seq__c`` of each record a batch touches. A bounded
:class:`VersionCache` keeps what the CRM holds (``Id``, ``Bus_Seq__c``) of the records this
process read or wrote, so only records not cached are read; replays of cached records cost no
call at all. Reads and writes go through the REST Composite resource, which counts as one API
call for up to 5 queries or sObject Collections: the SOQL reads of a batch (one per object,
more only when the ids overflow one URL) share one call per 5, and so do the writes of all
objects: one call per 5 collections (a collection is up to 200 records of one object). A batch
of up to 1,000 updates of one object thus costs at most one read call (none when all is cached)
and one write call; updates spread over the three objects may need a second write call.

The guard is read-then-write, not atomic, and the cache skips even the read. Both are safe
because every update of one aggregate travels on one partition, which one writer owns at a
time, and only the bus writes ``Bus_Seq__c``: what this writer last read or wrote is what the
CRM holds. The cache goes when that may no longer hold: all of it on every rebalance
(:meth:`CrmWriter.forget`: another worker may have written meanwhile), a record on any failed
write (a timeout may or may not have written). A cached record found gone (deleted in the CRM)
is read again in the same batch, so it still ends ``not_found``.

Where the org enforces the guard itself (a validation rule, :mod:`.guard_rule`, on the objects
in ``guarded``), a record addressed by its CRM Id is written without reading it first: the rule
refuses an older ``seq`` inside the write, atomically, and the refusal ends ``skipped_older``.
On the objects in ``upsertable`` (the no-create rule deployed too), a record addressed by
external id is not read either: it is upserted by that id, and the no-create rule's refusal of
the insert ends ``not_found``. Two aggregates of one batch naming one record (one by Id, one by
external id) are then not caught before the write, as the read guard catches them; the rule
still keeps that record's ``Bus_Seq__c`` from going back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from connectors.errors import ConnectorError, PermanentError
from streams.records import StatusUpdate
from streams.redaction import redact

from .batch import (
    GONE_CODES,
    Outcome,
    Target,
    UpdateResult,
    WriteReport,
    coalesce,
    in_chunks,
    record_key,
    record_payload,
    settle,
)
from .client import MAX_COLLECTION, SalesforceClient, soql_quote
from .error_map import NAME
from .guard_rule import is_no_record, is_refusal
from .settings import FieldMap, ObjectMapping
from .versions import CACHE_RECORDS, VersionCache

__all__ = [
    "CrmWriter", "Outcome", "UpdateResult", "VersionCache", "WriteReport", "coalesce",
    "in_chunks", "record_payload", "redact",
]  # fmt: skip

log = logging.getLogger(__name__)

#: A target with its record's ``(Id, stored seq)``: the seq None when not read (the org's rule
#: guards the write), the Id None when it is upserted by external id; and whether it was read.
_Known = tuple[Target, tuple[str | None, float | None] | None, bool]
#: A target to write: the fields (with its Id, or its external id for an upsert), and whether
#: its stored version went unread.
_Pending = tuple[Target, dict[str, Any], bool]


class CrmWriter:
    """Writes batches of :class:`StatusUpdate` to their CRM records (see the module doc)."""

    def __init__(
        self,
        client: SalesforceClient,
        fields: FieldMap | None = None,
        cache_records: int = CACHE_RECORDS,
        guarded: frozenset[str] = frozenset(),
        upsertable: frozenset[str] = frozenset(),
    ) -> None:
        self.client = client
        self.fields = fields or FieldMap()
        self.cache = VersionCache(cache_records)
        #: Objects whose org-side rule guards Bus_Seq__c (see :mod:`.guard_rule`).
        self.guarded = guarded
        #: Of those, the objects whose records are upserted by external id unread.
        self.upsertable = upsertable

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
        claimed: dict[str, set[str]] = {obj: set() for obj in by_object}  # ids written
        groups = list(by_object.values())
        gone = self._write_groups(groups, updates, results, cache, claimed, blind=True)
        if gone:  # records written unread that the CRM no longer has: read them this time
            self._write_groups(gone, updates, results, cache, claimed, blind=False)
        ordered = [results[i] for i in range(len(updates))]
        calls = self.client.api_calls - calls_before
        return WriteReport(ordered, calls, cache.hits - hits, cache.misses - misses)

    def _write_groups(
        self,
        groups: list[list[Target]],
        updates: Sequence[StatusUpdate],
        results: dict[int, UpdateResult],
        cache: VersionCache,
        claimed: dict[str, set[str]],
        blind: bool,
    ) -> list[list[Target]]:
        """Write each object's targets (one group per object): the records not cached are read
        for all objects together, then the records of all objects are written together. With
        ``blind``, a record of a guarded object addressed by Id is not read either. Returns, per
        object, the targets written unread whose record turned out gone."""
        known: list[list[_Known]] = []
        misses: list[list[Target]] = []
        for group in groups:
            obj = group[0].mapping.object_name
            unread = blind and obj in self.guarded
            upsert = blind and obj in self.upsertable
            known.append([])
            misses.append([])
            for target in group:
                hit: tuple[str | None, float | None] | None = cache.get(obj, record_key(target))
                if hit is None and unread and target.crm_record_id:
                    hit = (target.crm_record_id, None)  # the org's rule guards the write
                elif hit is None and upsert and not target.crm_record_id:
                    hit = (None, None)  # upserted by external id: the rules guard it
                if hit is None:
                    misses[-1].append(target)
                else:
                    known[-1].append((target, hit, True))
        reads = self._read(
            [(g[0].mapping, m) for g, m in zip(groups, misses, strict=True) if m], cache
        )
        pending: list[_Pending] = []
        for group, group_known, group_misses in zip(groups, known, misses, strict=True):
            if group_misses:
                stored = reads.pop(0)
                if isinstance(stored, ConnectorError):
                    for target in group_misses:
                        settle(
                            updates, results, target, Outcome.FAILED, target.crm_record_id, stored
                        )
                else:
                    group_known += [(t, stored.get(record_key(t)), False) for t in group_misses]
            obj = group[0].mapping.object_name
            pending += self._guard(group_known, updates, results, claimed[obj])
        gone: dict[str, list[Target]] = {}
        for target in self._write(pending, updates, results, cache, claimed):
            gone.setdefault(target.mapping.object_name, []).append(target)
        return list(gone.values())

    def _guard(
        self,
        known: list[_Known],
        updates: Sequence[StatusUpdate],
        results: dict[int, UpdateResult],
        claimed: set[str],
    ) -> list[_Pending]:
        """Settle one object's targets the guard decides (not found, older, a record two
        aggregates claim); return the others with the fields to write."""
        pending: list[_Pending] = []
        for target, version, unread in known:
            if version is None:
                settle(updates, results, target, Outcome.NOT_FOUND, target.crm_record_id)
                continue
            rid, seq = version
            if seq is not None and seq >= target.winner.seq:
                settle(updates, results, target, Outcome.SKIPPED_OLDER, rid)
            elif rid is not None and rid in claimed:
                dup = PermanentError(f"two aggregates of one batch map to record {rid}", psp=NAME)
                settle(updates, results, target, Outcome.FAILED, rid, dup)
            else:
                if rid is not None:
                    claimed.add(rid)
                payload = record_payload(target.mapping, rid, target.winner)
                pending.append((target, payload, unread))
        return pending

    def _write(
        self,
        pending: list[_Pending],
        updates: Sequence[StatusUpdate],
        results: dict[int, UpdateResult],
        cache: VersionCache,
        claimed: dict[str, set[str]],
    ) -> list[Target]:
        """Write the pending records of every object, sharing Composite calls (5 collections
        of up to 200 a call), and settle each; return those written unread by Id (cached or
        guarded by the rule) whose record turned out gone."""
        if not pending:
            return []
        # Per object, records named by Id, then those upserted by external id: one collection
        # kind and object a chunk.
        kinds: dict[tuple[str, str | None], list[_Pending]] = {}
        for item in pending:
            mapping = item[0].mapping
            field = None if "Id" in item[1] else mapping.external_id
            kinds.setdefault((mapping.object_name, field), []).append(item)
        keyed = [
            (key, items[i : i + MAX_COLLECTION])
            for key, items in kinds.items()
            for i in range(0, len(items), MAX_COLLECTION)
        ]
        try:
            answered = self.client.save_many(
                [(obj, field, [p for _, p, _ in chunk]) for (obj, field), chunk in keyed]
            )
        except ConnectorError as err:
            for target, payload, _ in pending:
                if "Id" in payload:  # may or may not be written: read next time
                    cache.evict(target.mapping.object_name, payload["Id"])
                settle(updates, results, target, Outcome.FAILED, payload.get("Id"), err)
            return []
        gone: list[Target] = []
        for ((obj, _), chunk), answers in zip(keyed, answered, strict=True):
            for (target, payload, unread), answer in zip(chunk, answers, strict=True):
                rid = payload.get("Id") or answer.record_id
                if answer.error is None:
                    ext = None if target.crm_record_id else record_key(target)
                    if rid:
                        cache.put(obj, rid, float(target.winner.seq), ext)
                    if answer.created:  # the no-create rule was switched off meanwhile
                        log.warning("CRM write-back created %s record %s (no-create rule off?)",
                                    obj, rid)  # fmt: skip
                    settle(updates, results, target, Outcome.WRITTEN, rid)
                    continue
                if rid:
                    cache.evict(obj, rid)  # refused or failed: what the CRM holds is not known
                if is_refusal(answer.error):  # the org's rule: the record holds a newer seq
                    settle(updates, results, target, Outcome.SKIPPED_OLDER, rid)
                elif is_no_record(answer.error):  # no record has the external id
                    settle(updates, results, target, Outcome.NOT_FOUND, None)
                else:
                    settle(updates, results, target, Outcome.FAILED, rid, answer.error)
                    if unread and "Id" in payload and answer.error.code in GONE_CODES:
                        claimed[obj].discard(str(rid))
                        gone.append(target)
        return gone

    def _read(
        self, wanted: list[tuple[ObjectMapping, list[Target]]], cache: VersionCache
    ) -> list[dict[str, tuple[str, float | None]] | ConnectorError]:
        """Per object, ``(Id, stored Bus_Seq__c)`` of the targets' records by :func:`_key`
        (also put in ``cache``), or the error that failed its read. The SOQL reads of all
        objects share Composite calls: one for up to 5 queries (a query per object unless the
        ids overflow one URL)."""
        soqls: list[tuple[int, ObjectMapping, str]] = []
        for n, (mapping, targets) in enumerate(wanted):
            ids = sorted({t.crm_record_id for t in targets if t.crm_record_id})
            ext_ids = sorted({t.winner.aggregate_id for t in targets if not t.crm_record_id})
            literals = [("Id", v) for v in ids] + [(mapping.external_id, v) for v in ext_ids]
            select = (
                f"SELECT Id, {mapping.external_id}, {mapping.bus_seq} FROM {mapping.object_name}"
            )
            for chunk in in_chunks([f"{name}\0{value}" for name, value in literals]):
                clauses: dict[str, list[str]] = {}
                for item in chunk:
                    name, _, value = item.partition("\0")
                    clauses.setdefault(name, []).append(soql_quote(value))
                where = " OR ".join(
                    f"{name} IN ({', '.join(vals)})" for name, vals in clauses.items()
                )
                soqls.append((n, mapping, f"{select} WHERE {where}"))
        stored: list[dict[str, tuple[str, float | None]] | ConnectorError] = [{} for _ in wanted]
        outcomes = self.client.query_many_outcomes([soql for _, _, soql in soqls]) if soqls else []
        for (n, mapping, _), rows in zip(soqls, outcomes, strict=True):
            found = stored[n]
            if isinstance(rows, ConnectorError):
                if not isinstance(found, ConnectorError):
                    stored[n] = rows  # any failed chunk fails the object's read
                continue
            for row in rows:
                rid, seq = str(row["Id"]), row.get(mapping.bus_seq)
                version = (rid, None if seq is None else float(seq))
                ext = row.get(mapping.external_id)
                ext_key = f"ext:{str(ext).lower()}" if ext else None
                cache.put(mapping.object_name, rid, version[1], ext_key)
                if isinstance(found, ConnectorError):
                    continue
                found[f"id:{rid}"] = version
                if ext_key:
                    found[ext_key] = version
        return stored
