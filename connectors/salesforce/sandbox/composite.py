"""sObject Collections: up to 200 records per call, per-record results, allOrNone rollback.

The connector's write-back batches status updates through these endpoints to stay inside the
API allowance (one call per 200 records), so the per-record error shape and the rollback
semantics must match Salesforce: with ``allOrNone`` false the valid records are written and the
invalid ones reported; with it true nothing is written and every record says why.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def save_collection(org: Org, body: Any, user: str, creating: bool) -> list[dict[str, Any]]:
    """``POST`` (create) or ``PATCH`` (update) ``/composite/sobjects``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Body must be {allOrNone, records: [...]}")
    records: list[Any] = body["records"]
    if len(records) > MAX_COLLECTION:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more "
            f"than {MAX_COLLECTION} records into this call",
        )
    specs = []
    for rec in records:
        rtype = rec.get("attributes", {}).get("type") if isinstance(rec, Mapping) else None
        if not rtype:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        specs.append(org.spec(str(rtype), "INVALID_TYPE"))
    all_or_none = bool(body.get("allOrNone", False))
    results: list[dict[str, Any]] = []
    try:
        with org.store.transaction():
            for spec, rec in zip(specs, records, strict=True):
                results.append(_save_one(org, spec, rec, user, creating))
            if all_or_none and not all(r["success"] for r in results):
                raise _Rollback
    except _Rollback:
        results = [
            r if not r["success"] else {"id": None, "success": False, "errors": [_ROLLED_BACK]}
            for r in results
        ]
    return results


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
    if len(ids) > MAX_COLLECTION:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more "
            f"than {MAX_COLLECTION} records into this call",
        )
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
