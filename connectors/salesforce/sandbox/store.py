"""Durable record storage for the sandbox: SQLite underneath, an in-memory copy on top.

Reads (SOQL filters, describe-driven lookups) run against the in-memory copy because the
sandbox serves one org on loopback and simplicity beats clever SQL here; every write goes through
to SQLite inside a transaction, so a restart with the same file sees the same records, ids and
SystemModstamp order. ``transaction()`` gives sObject Collections their all-or-none rollback.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .schema import ObjectSpec, id_counter, make_id

Record = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id       TEXT PRIMARY KEY,
    obj      TEXT NOT NULL,
    modstamp INTEGER NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_obj_modstamp ON records (obj, modstamp);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class Store:
    """Records per object, keyed by 18-character id, with a strictly increasing write clock."""

    def __init__(
        self,
        path: str,
        objects: list[ObjectSpec],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._records: dict[str, dict[str, Record]] = {o.name: {} for o in objects}
        self._undo: list[Callable[[], None]] | None = None
        self._last_ms = 0
        self._counters: dict[str, int] = {}
        #: (object, field) -> value -> ids that held it (see :meth:`find`).
        self._indexes: dict[tuple[str, str], dict[Any, set[str]]] = {}
        #: The same, keyed by the value's lowered text (see :meth:`by_keys`).
        self._folded: dict[tuple[str, str], dict[Any, set[str]]] = {}
        self._load(objects)

    def _load(self, objects: list[ObjectSpec]) -> None:
        prefixes = {o.key_prefix for o in objects}
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            if key == "modstamp":
                self._last_ms = int(value)
            elif key.startswith("counter:"):
                self._counters[key.removeprefix("counter:")] = int(value)
        rows = self._db.execute("SELECT id, obj, modstamp, data FROM records ORDER BY modstamp")
        for rid, obj, modstamp, data in rows:
            self._last_ms = max(self._last_ms, int(modstamp))
            prefix = rid[:3]
            if prefix in prefixes and rid[3:6] == "5g0":
                self._counters[prefix] = max(self._counters.get(prefix, 0), id_counter(rid))
            self._records.setdefault(obj, {})[rid] = json.loads(data)

    def close(self) -> None:
        """Close the SQLite connection (the in-memory copy stays readable)."""
        self._db.close()

    # --- clock and ids ---------------------------------------------------------------------

    def tick(self) -> int:
        """The next SystemModstamp in epoch ms: wall clock, but always after the previous one.

        Salesforce stamps have millisecond resolution; a poller that asks for
        ``SystemModstamp > last`` must never miss a record written in the same millisecond, so
        within a burst the stamp runs ahead of the wall clock by one ms per write.
        """
        now = int(self._clock() * 1000)
        self._last_ms = max(now, self._last_ms + 1)
        self._set_meta("modstamp", self._last_ms)
        return self._last_ms

    def new_id(self, spec: ObjectSpec) -> str:
        """A fresh 18-character id with the object's key prefix."""
        counter = self._counters.get(spec.key_prefix, 0) + 1
        self._counters[spec.key_prefix] = counter
        self._set_meta(f"counter:{spec.key_prefix}", counter)
        return make_id(spec.key_prefix, counter)

    def note_id(self, record_id: str) -> None:
        """Advance the id counter past an id chosen from outside (admin seeding)."""
        prefix = record_id[:3]
        if record_id[3:6] == "5g0":
            counter = id_counter(record_id)
            if counter > self._counters.get(prefix, 0):
                self._counters[prefix] = counter
                self._set_meta(f"counter:{prefix}", counter)

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- reads -----------------------------------------------------------------------------

    def get(self, obj: str, record_id: str) -> Record | None:
        """A copy of one record, or None."""
        found = self._records.get(obj, {}).get(record_id)
        return dict(found) if found is not None else None

    def object_of(self, record_id: str) -> str | None:
        """Which object holds ``record_id`` (ids are unique across objects)."""
        for obj, records in self._records.items():
            if record_id in records:
                return obj
        return None

    def all(self, obj: str, where: Callable[[Record], bool] | None = None) -> list[Record]:
        """The records of ``obj`` (those ``where`` accepts) in SystemModstamp order (not
        copies: do not mutate). Filtered before sorting: a query for a few hundred ids
        among tens of thousands of records sorts only what it found."""
        found = self._records.get(obj, {})
        records = list(found.values()) if where is None else [r for r in found.values() if where(r)]
        return _by_modstamp(records)

    def by_keys(
        self, obj: str, keys: Iterable[tuple[str, Iterable[str]]], where: Callable[[Record], bool]
    ) -> list[Record]:
        """:meth:`all` narrowed to the records whose ``field`` is one of the lowered texts, for
        each ``(field, texts)`` of ``keys``: a look-up per text in a case-folded index (built
        on first use, like :meth:`find`'s), not a scan of the object."""
        table = self._records.get(obj, {})
        rids: set[str] = set()
        for field, texts in keys:
            index = self._index(self._folded, obj, field, _fold_add)
            for text in texts:
                rids.update(index.get(text, ()))
        return _by_modstamp([r for r in (table.get(i) for i in rids) if r is not None and where(r)])

    def _index(
        self,
        indexes: dict[tuple[str, str], dict[Any, set[str]]],
        obj: str,
        field: str,
        add: Callable[[dict[Any, set[str]], Any, str], None],
    ) -> dict[Any, set[str]]:
        """``obj``'s index on ``field`` in ``indexes``, built on first use (:meth:`put`
        extends it from then on)."""
        index = indexes.get((obj, field))
        if index is None:
            index = {}
            for rid, held in self._records.get(obj, {}).items():
                add(index, held.get(field), rid)
            indexes[(obj, field)] = index
        return index

    def find(self, obj: str, field: str, value: Any, *, fold: bool = False) -> list[Record]:
        """Records whose ``field`` equals ``value`` (external id lookups and unique checks);
        ``fold``: a text ``value`` matches whatever its case, as Salesforce matches external
        ids and unique text fields unless they are defined case-sensitive.

        Answered from an index built on first use and extended by every :meth:`put`: a scan
        per lookup made seeding N records O(N^2) (50,000 took minutes). Entries are never
        removed, only checked against the record as it is now, so deletes and rolled-back
        writes need no index upkeep.
        """
        table = self._records.get(obj, {})
        if fold and isinstance(value, str):
            text = value.lower()
            folded = self._index(self._folded, obj, field, _fold_add)
            held = (table.get(rid) for rid in folded.get(text, ()))
            return [
                dict(r) for r in held if r is not None and str(r.get(field, "")).lower() == text
            ]
        try:
            hash(value)
        except TypeError:
            return [dict(r) for r in table.values() if r.get(field) == value]
        index = self._index(self._indexes, obj, field, _index_add)
        found = []
        for rid in index.get(value, ()):
            record = table.get(rid)
            if record is not None and record.get(field) == value:
                found.append(dict(record))
        return found

    def count(self, obj: str) -> int:
        """Number of records of ``obj``."""
        return len(self._records.get(obj, {}))

    # --- writes ----------------------------------------------------------------------------

    def put(self, obj: str, record: Record, modstamp_ms: int) -> None:
        """Insert or replace a whole record."""
        rid = record["Id"]
        table = self._records.setdefault(obj, {})
        previous = table.get(rid)
        self._db.execute(
            "INSERT INTO records (id, obj, modstamp, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET modstamp = excluded.modstamp, data = excluded.data",
            (rid, obj, modstamp_ms, json.dumps(record)),
        )
        table[rid] = dict(record)
        for indexes, add in ((self._indexes, _index_add), (self._folded, _fold_add)):
            for (index_obj, field), index in indexes.items():
                if index_obj == obj:
                    add(index, record.get(field), rid)
        self._remember(obj, rid, previous)

    def delete(self, obj: str, record_id: str) -> bool:
        """Delete one record; False when it did not exist."""
        table = self._records.get(obj, {})
        previous = table.pop(record_id, None)
        if previous is None:
            return False
        self._db.execute("DELETE FROM records WHERE id = ?", (record_id,))
        self._remember(obj, record_id, previous)
        return True

    def wipe(self, obj: str | None = None) -> int:
        """Delete every record (of one object, or of all objects except User)."""
        names = [obj] if obj is not None else [n for n in self._records if n != "User"]
        removed = 0
        with self.transaction():
            for name in names:
                for rid in list(self._records.get(name, {})):
                    removed += int(self.delete(name, rid))
        return removed

    def _remember(self, obj: str, rid: str, previous: Record | None) -> None:
        if self._undo is None:
            return
        table = self._records[obj]

        def undo() -> None:
            if previous is None:
                table.pop(rid, None)
            else:
                table[rid] = previous

        self._undo.append(undo)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or, on an exception, roll back (memory too).

        Nested use joins the outer transaction. Ids and stamps handed out inside a rolled-back
        transaction are not reused, as in Salesforce.
        """
        if self._undo is not None:
            yield
            return
        self._undo = []
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            for undo in reversed(self._undo):
                undo()
            self._set_meta("modstamp", self._last_ms)
            for prefix, counter in self._counters.items():
                self._set_meta(f"counter:{prefix}", counter)
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._undo = None


def _by_modstamp(records: list[Record]) -> list[Record]:
    records.sort(key=lambda r: (str(r.get("SystemModstamp", "")), r["Id"]))
    return records


def _fold_add(index: dict[Any, set[str]], value: Any, rid: str) -> None:
    """Entries are never removed: :meth:`Store.by_keys` filters what it finds anyway."""
    if value is not None:
        index.setdefault(str(value).lower(), set()).add(rid)


def _index_add(index: dict[Any, set[str]], value: Any, rid: str) -> None:
    if value is None:
        return
    with suppress(TypeError):  # an unhashable value is never looked up through the index
        index.setdefault(value, set()).add(rid)
