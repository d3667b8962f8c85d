"""The org: record semantics of the REST API on top of the store (no HTTP here).

Every write — single, upsert, collection, admin seed — goes through :meth:`Org._write`, which is
where Salesforce's rules live: field-level access, type coercion, unique external ids, lookups
that must point at existing records, validation rules, and the system fields (CreatedById /
LastModifiedById from the session's user, a fresh SystemModstamp on every write).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from . import soql, soql_eval
from .cursors import Cursors
from .faults import Faults
from .schema import (
    SYSTEM_FIELDS,
    USER_OBJECT,
    ApiError,
    ObjectSpec,
    coerce_value,
    format_datetime,
    normalize_id,
    user_id,
)
from .setup_rules import SetupRules
from .store import Record, Store


class Org:
    """One sandbox org: its objects, users (by session token) and records."""

    def __init__(
        self,
        store: Store,
        objects: Iterable[ObjectSpec],
        tokens: Mapping[str, str],
        faults: Faults,
        page_size: int = 2000,
    ) -> None:
        self.store = store
        self.faults = faults
        #: Validation rules deployed as org configuration (the version guard), not faults.
        self.setup_rules = SetupRules()
        self.objects: dict[str, ObjectSpec] = {o.name.lower(): o for o in objects}
        self.objects.setdefault("user", USER_OBJECT)
        self.tokens = {token: user_id(name) for token, name in tokens.items()}
        self.usernames = {user_id(name): name for name in tokens.values()}
        self.cursors = Cursors(page_size)
        #: (wall-clock seconds, object, record id) of every save, newest last: when a record
        #: changed, to the microsecond (stamps are ms and run ahead within a burst), for
        #: measuring how long a change took to reach the CRM.
        self.writes: deque[tuple[float, str, str]] = deque(maxlen=1_000_000)
        with store.transaction():
            for uid, name in self.usernames.items():
                if store.get("User", uid) is None:
                    ms = store.tick()
                    stamp = format_datetime(ms)
                    store.put(
                        "User",
                        {
                            "Id": uid,
                            "Name": name,
                            "Username": f"{name}@paybus.sandbox",
                            "Email": f"{name}@paybus.sandbox",
                            "CreatedDate": stamp,
                            "CreatedById": uid,
                            "LastModifiedDate": stamp,
                            "LastModifiedById": uid,
                            "SystemModstamp": stamp,
                        },
                        ms,
                    )

    # --- lookups ---------------------------------------------------------------------------

    def spec(self, name: str, code: str = "NOT_FOUND") -> ObjectSpec:
        """The object spec, or the error Salesforce gives for an unknown sObject type."""
        found = self.objects.get(name.lower())
        if found is None:
            if code == "NOT_FOUND":
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            raise ApiError(400, code, f"sObject type '{name}' is not supported.")
        return found

    def user_for(self, token: str) -> str | None:
        """The User id a session token belongs to."""
        return self.tokens.get(token)

    def _id(self, spec: ObjectSpec, raw: str) -> str:
        rid = normalize_id(raw)
        if rid is None or not rid.startswith(spec.key_prefix):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {raw}",
            )
        return rid

    def _existing(self, spec: ObjectSpec, raw: str) -> Record:
        record = self.store.get(spec.name, self._id(spec, raw))
        if record is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return record

    def shape(
        self,
        spec: ObjectSpec,
        record: Mapping[str, Any],
        version: str,
        fields: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """A record as the REST API returns it: ``attributes`` first, then fields."""
        out: dict[str, Any] = {
            "attributes": {
                "type": spec.name,
                "url": f"/services/data/v{version}/sobjects/{spec.name}/{record['Id']}",
            }
        }
        names = [f.name for f in spec.fields] if fields is None else list(fields)
        for name in names:
            out[name] = record.get(name)
        return out

    def field_names(self, spec: ObjectSpec, names: str | None) -> list[str] | None:
        if not names:
            return None
        result = []
        for raw in names.split(","):
            field = spec.field(raw.strip())
            if field is None:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{raw.strip()}' on sobject of type {spec.name}",
                )
            result.append(field.name)
        return result

    # --- single-record operations ----------------------------------------------------------

    def read(
        self, obj: str, raw_id: str, version: str, fields: str | None = None
    ) -> dict[str, Any]:
        """``GET /sobjects/{obj}/{id}``."""
        spec = self.spec(obj)
        return self.shape(
            spec, self._existing(spec, raw_id), version, self.field_names(spec, fields)
        )

    def read_by_external_id(self, obj: str, field: str, value: str, version: str) -> dict[str, Any]:
        """``GET /sobjects/{obj}/{extIdField}/{value}``."""
        spec = self.spec(obj)
        matches = self._by_external_id(spec, field, value)
        if not matches:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return self.shape(spec, matches[0], version)

    def create(self, obj: str, data: Mapping[str, Any], user: str) -> str:
        """``POST /sobjects/{obj}``: the new record's id."""
        return str(self.write(self.spec(obj), None, data, user)["Id"])

    def update(self, obj: str, raw_id: str, data: Mapping[str, Any], user: str) -> None:
        """``PATCH /sobjects/{obj}/{id}``."""
        spec = self.spec(obj)
        self.write(spec, self._existing(spec, raw_id), data, user)

    def delete(self, obj: str, raw_id: str) -> None:
        """``DELETE /sobjects/{obj}/{id}``."""
        spec = self.spec(obj)
        self._writable(spec, "delete")
        record = self._existing(spec, raw_id)
        self.store.delete(spec.name, record["Id"])

    def _by_external_id(self, spec: ObjectSpec, field: str, value: str) -> list[Record]:
        fspec = spec.field(field)
        if fspec is None or not (fspec.external_id or fspec.name == "Id"):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field}",
            )
        if fspec.name == "Id":
            record = self.store.get(spec.name, normalize_id(value) or "")
            return [record] if record else []
        return self.store.find(spec.name, fspec.name, value, fold=True)

    def upsert(
        self, obj: str, field: str, value: str, data: Mapping[str, Any], user: str
    ) -> tuple[str, bool]:
        """``PATCH /sobjects/{obj}/{extIdField}/{value}``: (id, created)."""
        spec = self.spec(obj)
        matches = self._by_external_id(spec, field, value)
        if len(matches) > 1:
            raise ApiError(300, "MULTIPLE_CHOICES", f"More than one record has {field} = {value}")
        fname = spec.field(field).name  # type: ignore[union-attr]  # checked by _by_external_id
        body = dict(data)
        given = next((v for k, v in body.items() if k.lower() == fname.lower()), None)
        if given is not None and str(given) != value:
            raise ApiError(400, "INVALID_FIELD", f"Field {fname} in body does not match the URL")
        if matches:
            return self.write(spec, matches[0], body, user)["Id"], False
        if fname != "Id":
            body[fname] = value
        return self.write(spec, None, body, user)["Id"], True

    # --- the one write path ----------------------------------------------------------------

    def _writable(self, spec: ObjectSpec, op: str) -> None:
        if not spec.api_writable:
            raise ApiError(
                400, "INVALID_TYPE_FOR_OPERATION", f"entity type {spec.name} does not support {op}"
            )

    def write(
        self,
        spec: ObjectSpec,
        existing: Record | None,
        data: Mapping[str, Any],
        user: str,
        system: bool = False,
    ) -> Record:
        self._writable(spec, "insert" if existing is None else "update")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "attributes":
                continue
            field = spec.field(key)
            if field is None:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {spec.name}",
                    [key],
                )
            if (
                field.name == "Id"
                and existing is not None
                and normalize_id(str(value)) == existing["Id"]
            ):
                continue
            if system and field.name in SYSTEM_FIELDS:
                changes[field.name] = self._system_value(spec, field.name, value, existing)
                continue
            allowed = field.createable if existing is None else field.updateable
            if not allowed:
                raise ApiError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile or "
                    "permission set.",
                    [field.name],
                )
            changes[field.name] = self._coerce(spec, field.name, value)
        record: Record = {f.name: None for f in spec.fields} if existing is None else dict(existing)
        record.update(changes)
        self._check_unique(spec, record, changes)
        if existing is None and not record.get("Id"):
            record["Id"] = self.store.new_id(spec)
        if not record.get("Name"):
            record["Name"] = record["Id"]
        if not system:
            self.setup_rules.check(spec.name, existing, record)
            self.faults.check_rules(spec.name, record)
        ms = self.store.tick()
        stamp = format_datetime(ms)
        record["SystemModstamp"] = stamp
        if not (system and "LastModifiedDate" in changes):
            record["LastModifiedDate"] = stamp
        record.setdefault("LastModifiedById", None)
        if not (system and "LastModifiedById" in changes):
            record["LastModifiedById"] = user
        if existing is None:
            if not (system and "CreatedDate" in changes):
                record["CreatedDate"] = stamp
            if not (system and "CreatedById" in changes):
                record["CreatedById"] = user
        self.store.put(spec.name, record, ms)
        self.writes.append((time.time(), spec.name, str(record["Id"])))
        return record

    def _system_value(
        self, spec: ObjectSpec, name: str, value: Any, existing: Record | None
    ) -> Any:
        """A seeded system field: typed like any field, but lookups to users are not checked.

        A seeded Id must carry the object's key prefix and advances the id counter, so later
        inserts never collide with it.
        """
        field = spec.field(name)
        assert field is not None
        if name != "Id":
            return coerce_value(
                spec, replace(field, type="string") if field.type == "reference" else field, value
            )
        rid = normalize_id(str(value))
        if existing is not None or rid is None or not rid.startswith(spec.key_prefix):
            raise ApiError(400, "MALFORMED_ID", f"malformed id {value}", ["Id"])
        self.store.note_id(rid)
        return rid

    def _coerce(self, spec: ObjectSpec, name: str, value: Any) -> Any:
        field = spec.field(name)
        assert field is not None
        coerced = coerce_value(spec, field, value)
        if field.type == "reference" and coerced is not None:
            targets = [t.lower() for t in field.reference_to]
            owner = self.store.object_of(coerced)
            if owner is None or owner.lower() not in targets:
                raise ApiError(
                    400,
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"invalid cross reference id: {value}",
                    [name],
                )
        return coerced

    def _check_unique(self, spec: ObjectSpec, record: Record, changes: Mapping[str, Any]) -> None:
        for field in spec.fields:
            if not field.unique or field.name not in changes or record.get(field.name) is None:
                continue
            for other in self.store.find(spec.name, field.name, record[field.name], fold=True):
                if other["Id"] != record.get("Id"):
                    raise ApiError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {field.name} duplicates value on "
                        f"record with id: {other['Id']}",
                        [field.name],
                    )

    def seed(self, obj: str, records: Iterable[Mapping[str, Any]], user: str | None) -> list[str]:
        """Admin seeding: system fields may be set, validation rules are skipped."""
        spec = self.spec(obj)
        owner = user_id(user) if user else next(iter(self.usernames), "")
        ids = []
        with self.store.transaction():
            for data in records:
                existing = None
                if data.get("Id"):
                    existing = self.store.get(spec.name, normalize_id(str(data["Id"])) or "")
                written = self.write(spec, existing, data, owner, system=True)
                ids.append(written["Id"])
        return ids

    # --- SOQL ------------------------------------------------------------------------------

    def query(self, text: str, version: str, batch_size: int | None = None) -> dict[str, Any]:
        """``GET /query?q=...``: the first page and, when more remain, a ``nextRecordsUrl``."""
        try:
            parsed = soql.parse(text)
            spec = self.spec(parsed.sobject, "INVALID_TYPE")

            def lookup(name: str) -> tuple[str, str] | None:
                field = spec.field(name)
                return (field.name, field.type) if field else None

            bound = soql_eval.bind(parsed, spec.name, lookup)
        except soql.SoqlError as err:
            raise ApiError(400, err.code, err.message) from None
        where = bound.where

        def indexed(name: str) -> bool:  # as in Salesforce: Id and external ids
            field = spec.field(name)
            return name == "Id" or (field is not None and field.external_id)

        keys = soql_eval.narrowing(where, indexed)
        if keys is None:
            found = self.store.all(spec.name, lambda r: soql_eval.matches(where, r))
        else:
            found = self.store.by_keys(spec.name, keys, lambda r: soql_eval.matches(where, r))
        rows = soql_eval.apply(bound, found)
        if bound.count:
            return {"totalSize": len(rows), "done": True, "records": []}
        shaped = [self.shape(spec, r, version, bound.fields) for r in rows]
        return self.cursors.first_page(shaped, version, batch_size)

    def query_more(
        self, locator: str, version: str, batch_size: int | None = None
    ) -> dict[str, Any]:
        """``GET /query/{locator}-{offset}``: the next page of an earlier query."""
        return self.cursors.more(locator, version, batch_size)
