"""sObject Collections: up to 200 records per call, per-record results, allOrNone rollback.

The connector's write-back batches status updates through these endpoints to stay inside the
API allowance (one call per 200 records), so the per-record error shape and the rollback
semantics must match Salesforce: with ``allOrNone`` false the valid records are written and the
invalid ones reported; with it true nothing is written and every record says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from .org import Org
from .schema import ApiError, ObjectSpec, normalize_id

MAX_COLLECTION = 200
_ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
    "fields": [],
}


class _Rollback(Exception):
    """Raised inside a collection transaction to undo it (allOrNone)."""


def _check_size(records: list[Any]) -> None:
    if len(records) > MAX_COLLECTION:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this "
            "call",
        )


def save_collection(org: Org, body: Any, user: str, creating: bool) -> list[dict[str, Any]]:
    """``POST`` (create) or ``PATCH`` (update) ``/composite/sobjects``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Body must be {allOrNone, records: [...]}")
    records: list[Any] = body["records"]
    _check_size(records)
    specs = []
    for rec in records:
        rtype = rec.get("attributes", {}).get("type") if isinstance(rec, Mapping) else None
        if not rtype:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        specs.append(org.spec(str(rtype), "INVALID_TYPE"))
    saves = (
        partial(_save_one, org, spec, rec, user, creating)
        for spec, rec in zip(specs, records, strict=True)
    )
    return _all_saved(org, saves, bool(body.get("allOrNone", False)))


def _all_saved(
    org: Org, saves: Iterable[Callable[[], dict[str, Any]]], all_or_none: bool
) -> list[dict[str, Any]]:
    """Run each record's save in one transaction; with ``all_or_none``, a failed record
    rolls them all back and the saved ones report the rollback."""
    results: list[dict[str, Any]] = []
    try:
        with org.store.transaction():
            results.extend(save() for save in saves)
            if all_or_none and not all(r["success"] for r in results):
                raise _Rollback
    except _Rollback:
        results = [
            r if not r["success"] else {"id": None, "success": False, "errors": [_ROLLED_BACK]}
            for r in results
        ]
    return results


def upsert_collection(org: Org, obj: str, field: str, body: Any, user: str) -> list[dict[str, Any]]:
    """``PATCH /composite/sobjects/{obj}/{field}``: upsert each record by the external id
    ``field`` (update the record that has it, else insert); results carry ``created``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Body must be {allOrNone, records: [...]}")
    records: list[Any] = body["records"]
    _check_size(records)
    spec = org.spec(obj)
    fspec = spec.field(field)
    if fspec is None or not (fspec.external_id or fspec.name == "Id"):
        raise ApiError(400, "INVALID_FIELD", f"{field} is not an External ID field of {obj}")
    values: list[str | None] = []
    for rec in records:
        rtype = rec.get("attributes", {}).get("type") if isinstance(rec, Mapping) else None
        if not rtype or str(rtype).lower() != spec.name.lower():
            raise ApiError(400, "INVALID_TYPE", f"Every record must be of type {spec.name}.")
        value = next((v for k, v in rec.items() if k.lower() == fspec.name.lower()), None)
        values.append(None if value is None else str(value))
    seen = [str(v).lower() for v in values if v is not None]
    saves = (
        partial(_upsert_one, org, spec, fspec.name, rec, value, user, seen)
        for rec, value in zip(records, values, strict=True)
    )
    return _all_saved(org, saves, bool(body.get("allOrNone", False)))


def _upsert_one(
    org: Org,
    spec: ObjectSpec,
    field: str,
    rec: Mapping[str, Any],
    value: str | None,
    user: str,
    seen: list[str],
) -> dict[str, Any]:
    try:
        if value is None:
            raise ApiError(400, "MISSING_ARGUMENT", f"{field} not specified", [field])
        if seen.count(value.lower()) > 1:
            raise ApiError(
                400, "DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [field]
            )
        data = {k: v for k, v in rec.items() if k != "attributes"}
        try:
            rid, created = org.upsert(spec.name, field, value, data, user)
        except ApiError as err:
            if err.code != "MULTIPLE_CHOICES":
                raise
            raise ApiError(
                400,
                "DUPLICATE_EXTERNAL_ID",
                f"{field}: more than one record found for external id field: {value}",
                [field],
            ) from err
    except ApiError as err:
        return {"success": False, "errors": [err.record_error()]}
    return {"id": rid, "success": True, "errors": [], "created": created}


def _save_one(
    org: Org, spec: ObjectSpec, rec: Mapping[str, Any], user: str, creating: bool
) -> dict[str, Any]:
    raw_id = rec.get("Id") or rec.get("id")
    try:
        if creating:
            if raw_id:
                raise ApiError(400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            record = org.write(spec, None, rec, user)
        else:
            if not raw_id:
                raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call")
            rid = normalize_id(str(raw_id))
            if rid is None or not rid.startswith(spec.key_prefix):
                raise ApiError(400, "MALFORMED_ID", f"malformed id {raw_id}", ["Id"])
            existing = org.store.get(spec.name, rid)
            if existing is None:
                raise ApiError(
                    400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"]
                )
            data = {k: v for k, v in rec.items() if k not in ("Id", "id")}
            record = org.write(spec, existing, data, user)
    except ApiError as err:
        return {
            "id": normalize_id(str(raw_id)) if raw_id else None,
            "success": False,
            "errors": [err.record_error()],
        }
    return {"id": record["Id"], "success": True, "errors": []}


def delete_collection(org: Org, ids: list[str], all_or_none: bool) -> list[dict[str, Any]]:
    """``DELETE /composite/sobjects?ids=...``."""
    _check_size(ids)
    results: list[dict[str, Any]] = []
    try:
        with org.store.transaction():
            for raw in ids:
                rid = normalize_id(raw) or raw
                obj = org.store.object_of(rid)
                if obj is None or not org.spec(obj).api_writable:
                    err = {
                        "statusCode": "ENTITY_IS_DELETED",
                        "message": "entity is deleted",
                        "fields": [],
                    }
                    results.append({"id": rid, "success": False, "errors": [err]})
                    continue
                org.store.delete(obj, rid)
                results.append({"id": rid, "success": True, "errors": []})
            if all_or_none and not all(r["success"] for r in results):
                raise _Rollback
    except _Rollback:
        results = [
            r if not r["success"] else {**r, "success": False, "errors": [_ROLLED_BACK]}
            for r in results
        ]
    return results


def retrieve_many(
    org: Org, obj: str, ids: list[str], fields: str | None, version: str
) -> list[dict[str, Any] | None]:
    """``GET /composite/sobjects/{obj}?ids=...&fields=...``: records, None where missing."""
    spec = org.spec(obj)
    names = org.field_names(spec, fields)
    if names is None:
        raise ApiError(400, "MISSING_ARGUMENT", "Required parameter fields is missing")
    if len(ids) > 2000:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", "Cannot retrieve more than 2000 records")
    out: list[dict[str, Any] | None] = []
    for raw in ids:
        record = org.store.get(spec.name, normalize_id(raw) or "")
        out.append(org.shape(spec, record, version, names) if record else None)
    return out
