"""SQLite persistence for the sandbox.

One table holds every resource as its public JSON plus the few private columns the lifecycle
needs (scripted outcome, when its next step is due). Keeping the public JSON verbatim means a
restart with the same file answers byte-for-byte what it answered before. Sensitive bank
details never reach this module: ``resources.py`` keeps only the last two digits.

All access happens on the server's event-loop thread; every call is short and synchronous, so
one call is atomic with respect to the others.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    outcome TEXT,
    due_at INTEGER
);
CREATE INDEX IF NOT EXISTS resources_type_seq ON resources(type, seq);
CREATE INDEX IF NOT EXISTS resources_due ON resources(due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    type TEXT NOT NULL, key TEXT NOT NULL, resource_id TEXT NOT NULL,
    PRIMARY KEY (type, key)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL);
"""

Json = dict[str, Any]


@dataclass
class Record:
    """A stored resource: its public JSON plus the lifecycle's private columns."""

    seq: int
    id: str
    type: str
    data: Json
    outcome: str | None
    due_at: int | None


@dataclass
class Filter:
    """One list filter: ``json_extract(data, path) <op> value`` (``op`` ``IN`` takes a list)."""

    path: str
    op: str
    value: Any


@dataclass
class Page:
    """One page of a cursor-paginated list, newest first as GoCardless lists them."""

    items: list[Json]
    before: str | None
    after: str | None


class Store:
    """The sandbox's SQLite database (a file, or ``:memory:``)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)
        if self.get_setting("namespace") is None:
            alphabet = string.ascii_uppercase + string.digits
            self.set_setting("namespace", "".join(secrets.choice(alphabet) for _ in range(4)))

    def close(self) -> None:
        """Close the connection (the file keeps everything committed so far)."""
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes (a resource, its event, its outbox row) into one commit."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- settings and ids -------------------------------------------------------------------

    def get_setting(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO settings(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def new_id(self, prefix: str) -> str:
        """A GoCardless-looking id: prefix, this database's namespace, a counter.

        Counter-based so a scripted scenario gets the same ids in the same order every run;
        the random per-database namespace keeps two sandboxes' ids apart.
        """
        with self.transaction():
            counter = int(self.get_setting(f"counter:{prefix}") or 0) + 1
            self.set_setting(f"counter:{prefix}", counter)
        return f"{prefix}0{self.get_setting('namespace')}{counter:07d}"

    # -- resources --------------------------------------------------------------------------

    def insert(
        self, rtype: str, data: Json, outcome: str | None = None, due_at: int | None = None
    ) -> Record:
        cur = self.conn.execute(
            "INSERT INTO resources(id, type, data, outcome, due_at) VALUES (?, ?, ?, ?, ?)",
            (data["id"], rtype, json.dumps(data), outcome, due_at),
        )
        assert cur.lastrowid is not None
        return Record(cur.lastrowid, data["id"], rtype, data, outcome, due_at)

    def save(self, record: Record) -> None:
        self.conn.execute(
            "UPDATE resources SET data = ?, outcome = ?, due_at = ? WHERE id = ?",
            (json.dumps(record.data), record.outcome, record.due_at, record.id),
        )

    def get(self, rtype: str, rid: str) -> Record | None:
        row = self.conn.execute(
            "SELECT seq, id, type, data, outcome, due_at FROM resources WHERE id = ? AND type = ?",
            (rid, rtype),
        ).fetchone()
        return None if row is None else _record(row)

    def due(self, until_ms: int | None = None) -> list[Record]:
        """Every non-final record (optionally only those due by ``until_ms``), oldest first."""
        sql = "SELECT seq, id, type, data, outcome, due_at FROM resources WHERE due_at IS NOT NULL"
        params: tuple[Any, ...] = ()
        if until_ms is not None:
            sql += " AND due_at <= ?"
            params = (until_ms,)
        return [_record(r) for r in self.conn.execute(sql + " ORDER BY seq", params)]

    def find(self, rtype: str, filters: list[Filter]) -> list[Record]:
        """Every record of a type matching the filters, oldest first (no paging)."""
        where, params = _where(rtype, filters)
        sql = f"SELECT seq, id, type, data, outcome, due_at FROM resources WHERE {where}"
        return [_record(r) for r in self.conn.execute(sql + " ORDER BY seq", params)]

    def count(self, rtype: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM resources WHERE type = ?", (rtype,))
        return int(row.fetchone()[0])

    def page(
        self,
        rtype: str,
        filters: list[Filter],
        limit: int,
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        """A page newest first; ``after``/``before`` are ids of the adjacent page's edge.

        Returns ``None`` cursors at either end, which is how ``gocardless_pro``'s paginator
        knows to stop.
        """
        where, params = _where(rtype, filters)
        base = f"SELECT seq, data FROM resources WHERE {where}"
        if before is not None:
            rows = self.conn.execute(
                base + " AND seq > ? ORDER BY seq ASC LIMIT ?",
                (*params, self._seq_of(before), limit),
            ).fetchall()[::-1]
        else:
            extra, extra_params = (
                ("", ()) if after is None else (" AND seq < ?", (self._seq_of(after),))
            )
            rows = self.conn.execute(
                base + extra + " ORDER BY seq DESC LIMIT ?", (*params, *extra_params, limit)
            ).fetchall()
        items = [json.loads(r[1]) for r in rows]
        if not rows:
            return Page(items, None, None)

        def exists(cond: str, seq: int) -> bool:
            sql = f"SELECT 1 FROM resources WHERE {where} AND seq {cond} ? LIMIT 1"
            return self.conn.execute(sql, (*params, seq)).fetchone() is not None

        newer = exists(">", rows[0][0])
        older = exists("<", rows[-1][0])
        return Page(items, items[0]["id"] if newer else None, items[-1]["id"] if older else None)

    def _seq_of(self, rid: str) -> int:
        row = self.conn.execute("SELECT seq FROM resources WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise KeyError(rid)
        return int(row[0])

    # -- idempotency and outbox -------------------------------------------------------------

    def idempotent_id(self, rtype: str, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT resource_id FROM idempotency WHERE type = ? AND key = ?", (rtype, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def remember_key(self, rtype: str, key: str, rid: str) -> None:
        self.conn.execute(
            "INSERT INTO idempotency(type, key, resource_id) VALUES (?, ?, ?)", (rtype, key, rid)
        )

    def enqueue(self, seq: int, event_id: str) -> None:
        self.conn.execute("INSERT INTO outbox(seq, event_id) VALUES (?, ?)", (seq, event_id))

    def outbox(self) -> list[Json]:
        """Events not yet delivered (nor dropped), in the order they happened."""
        rows = self.conn.execute(
            "SELECT r.data FROM outbox o JOIN resources r ON r.seq = o.seq ORDER BY o.seq"
        )
        return [json.loads(r[0]) for r in rows]

    def settle(self, event_ids: list[str]) -> None:
        """Take delivered or dropped events out of the outbox."""
        self.conn.executemany("DELETE FROM outbox WHERE event_id = ?", [(e,) for e in event_ids])


def _record(row: tuple[Any, ...]) -> Record:
    return Record(int(row[0]), row[1], row[2], json.loads(row[3]), row[4], row[5])


def _where(rtype: str, filters: list[Filter]) -> tuple[str, tuple[Any, ...]]:
    """Build the WHERE clause; paths and ops come from the fixed specs in ``app.py``, values
    from the request are always bound parameters."""
    clauses = ["type = ?"]
    params: list[Any] = [rtype]
    for f in filters:
        expr = f"json_extract(data, '{f.path}')"
        if f.op == "IN":
            clauses.append(f"{expr} IN ({', '.join('?' for _ in f.value)})")
            params.extend(f.value)
        elif f.op == "IN_MANDATES_OF":
            clauses.append(
                f"{expr} IN (SELECT id FROM resources WHERE type = 'mandates' "
                "AND json_extract(data, '$.links.customer') = ?)"
            )
            params.append(f.value)
        else:
            clauses.append(f"{expr} {f.op} ?")
            params.append(f.value)
    return " AND ".join(clauses), tuple(params)
