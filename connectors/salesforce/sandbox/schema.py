"""Object and field definitions of the sandbox org, ids, timestamps and value coercion.

The sandbox is only useful if it is as strict as a real org about the things our connector can
get wrong: unknown fields, writes to read-only system fields, values of the wrong type, malformed
ids. Everything here is pure (no I/O) so the store and the HTTP layer share one set of rules.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

#: Field types, named as Salesforce's describe names them.
FIELD_TYPES = frozenset(
    {
        "id",
        "string",
        "textarea",
        "url",
        "picklist",
        "double",
        "currency",
        "date",
        "datetime",
        "boolean",
        "reference",
    }
)
NUMBER_TYPES = frozenset({"double", "currency"})
SYSTEM_FIELDS = (
    "Id",
    "Name",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[0-9A-Za-z]{15}([0-9A-Za-z]{3})?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ApiError(Exception):
    """A Salesforce-shaped error: an HTTP status plus ``errorCode``/``message`` (and fields)."""

    def __init__(self, status: int, code: str, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)

    def body(self) -> list[dict[str, Any]]:
        """The REST error body: a list with one ``{message, errorCode}`` entry."""
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            entry["fields"] = self.fields
        return [entry]

    def record_error(self) -> dict[str, Any]:
        """The per-record error shape used by sObject Collections results."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class FieldSpec:
    """One field of an sObject as ``describe`` reports it."""

    name: str
    type: str = "string"
    label: str = ""
    length: int = 255
    updateable: bool = True
    createable: bool = True
    external_id: bool = False
    unique: bool = False
    nillable: bool = True
    reference_to: tuple[str, ...] = ()
    scale: int = 0

    def describe(self) -> dict[str, Any]:
        """The field entry of ``GET .../sobjects/{obj}/describe``."""
        is_number = self.type in NUMBER_TYPES
        return {
            "name": self.name,
            "label": self.label or self.name.removesuffix("__c").replace("_", " "),
            "type": self.type,
            "length": self.length if self.type in ("string", "textarea", "picklist") else 0,
            "precision": 18 if is_number else 0,
            "scale": self.scale if is_number else 0,
            "updateable": self.updateable,
            "createable": self.createable,
            "externalId": self.external_id,
            "unique": self.unique,
            "idLookup": self.external_id or self.name == "Id",
            "nillable": self.nillable,
            "custom": self.name.endswith("__c"),
            "referenceTo": list(self.reference_to),
            "relationshipName": (
                self.name.removesuffix("__c") + "__r" if self.reference_to else None
            ),
        }


@dataclass(frozen=True)
class ObjectSpec:
    """An sObject: its API name, 3-character key prefix and fields (system fields added)."""

    name: str
    key_prefix: str
    fields: tuple[FieldSpec, ...] = ()
    label: str = ""
    api_writable: bool = True
    by_lower: dict[str, FieldSpec] = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key_prefix) != 3:
            raise ValueError(f"key prefix of {self.name} must have 3 characters")
        system = (
            FieldSpec("Id", "id", length=18, updateable=False, createable=False, nillable=False),
            FieldSpec("Name", "string", length=80),
            FieldSpec("CreatedDate", "datetime", updateable=False, createable=False),
            FieldSpec(
                "CreatedById",
                "reference",
                updateable=False,
                createable=False,
                reference_to=("User",),
            ),
            FieldSpec("LastModifiedDate", "datetime", updateable=False, createable=False),
            FieldSpec(
                "LastModifiedById",
                "reference",
                updateable=False,
                createable=False,
                reference_to=("User",),
            ),
            FieldSpec("SystemModstamp", "datetime", updateable=False, createable=False),
        )
        own = tuple(f for f in self.fields if f.name not in SYSTEM_FIELDS)
        for spec in own:
            if spec.type not in FIELD_TYPES:
                raise ValueError(f"{self.name}.{spec.name}: unknown field type {spec.type}")
        object.__setattr__(self, "fields", system + own)
        object.__setattr__(self, "by_lower", {f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldSpec | None:
        """Field by name, case-insensitively as Salesforce resolves API names."""
        return self.by_lower.get(name.lower())

    def describe(self) -> dict[str, Any]:
        """The body of ``GET .../sobjects/{obj}/describe``."""
        return {
            **self.basic_info(),
            "fields": [f.describe() for f in self.fields],
        }

    def basic_info(self) -> dict[str, Any]:
        """The object summary used by global describe and ``GET .../sobjects/{obj}``."""
        base = f"/services/data/v59.0/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label or self.name.removesuffix("__c").replace("_", " "),
            "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"),
            "createable": self.api_writable,
            "updateable": self.api_writable,
            "deletable": self.api_writable,
            "queryable": True,
            "retrieveable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _payment_like(extra: Iterable[FieldSpec] = ()) -> tuple[FieldSpec, ...]:
    return (
        FieldSpec("Amount__c", "double", scale=2),
        FieldSpec("Currency__c", "string", length=3),
        FieldSpec("Method__c", "string", length=40),
        FieldSpec("Gateway__c", "string", length=40),
        FieldSpec("Status__c", "string", length=40),
        FieldSpec("Psp_Id__c", "string", length=80),
        FieldSpec("Bus_Seq__c", "double", scale=0),
        FieldSpec("Settlement_Date__c", "date"),
        FieldSpec("External_Id__c", "string", length=80, external_id=True, unique=True),
        FieldSpec("Failure_Reason__c", "string", length=255),
        # Tokens only (a PaymentMethod, a bank account or mandate id), never account numbers.
        FieldSpec("Customer_Ref__c", "string", length=80),
        FieldSpec("Payment_Method_Ref__c", "string", length=80),
        FieldSpec("Mandate_Ref__c", "string", length=80),
        FieldSpec("Country__c", "string", length=2),
        FieldSpec("Charge_Date__c", "date"),
        *extra,
    )


USER_OBJECT = ObjectSpec(
    "User",
    "005",
    (FieldSpec("Username", "string"), FieldSpec("Email", "string")),
    api_writable=False,
)


def default_objects() -> list[ObjectSpec]:
    """The paybus objects of the demo org: payments, mandates and refunds."""
    return [
        ObjectSpec(
            "Payment__c",
            "a01",
            _payment_like([FieldSpec("Payment_Page_URL__c", "url", length=255)]),
            label="Payment",
        ),
        ObjectSpec("Mandate__c", "a02", _payment_like(), label="Mandate"),
        ObjectSpec(
            "Refund__c",
            "a03",
            _payment_like([FieldSpec("Payment__c", "reference", reference_to=("Payment__c",))]),
            label="Refund",
        ),
    ]


def objects_from_json(data: Iterable[Mapping[str, Any]]) -> list[ObjectSpec]:
    """Object specs from the CLI's ``--schema`` JSON: name, keyPrefix, fields[{name, type}]."""
    result = []
    for obj in data:
        fields = tuple(
            FieldSpec(
                name=f["name"],
                type=f.get("type", "string"),
                length=int(f.get("length", 255)),
                updateable=bool(f.get("updateable", True)),
                createable=bool(f.get("createable", True)),
                external_id=bool(f.get("externalId", False)),
                unique=bool(f.get("unique", f.get("externalId", False))),
                reference_to=tuple(f.get("referenceTo", ())),
                scale=int(f.get("scale", 0)),
            )
            for f in obj.get("fields", [])
        )
        result.append(ObjectSpec(obj["name"], obj["keyPrefix"], fields, obj.get("label", "")))
    return result


# --- ids -------------------------------------------------------------------------------------


def id_suffix(id15: str) -> str:
    """The 3-character case-safe suffix Salesforce appends to a 15-character id."""
    out = ""
    for chunk in range(3):
        bits = 0
        for pos, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << pos
        out += _SUFFIX[bits]
    return out


def make_id(key_prefix: str, counter: int) -> str:
    """An 18-character id: key prefix, pod ``5g``, a reserved ``0``, base62 counter, suffix."""
    digits = ""
    n = counter
    for _ in range(9):
        n, rem = divmod(n, 62)
        digits = _BASE62[rem] + digits
    id15 = f"{key_prefix}5g0{digits}"
    return id15 + id_suffix(id15)


def id_counter(record_id: str) -> int:
    """The counter encoded in an id made by :func:`make_id` (to resume after a restart)."""
    value = 0
    for char in record_id[6:15]:
        value = value * 62 + _BASE62.index(char)
    return value


def normalize_id(raw: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None when it is not an id."""
    if not _ID_RE.match(raw):
        return None
    return raw if len(raw) == 18 else raw + id_suffix(raw)


def user_id(username: str) -> str:
    """A stable User id derived from the user name, so it survives restarts and config order."""
    digest = int.from_bytes(hashlib.sha256(username.encode()).digest()[:8], "big")
    return make_id(USER_OBJECT.key_prefix, digest % (62**9))


# --- timestamps ------------------------------------------------------------------------------


def format_datetime(ms: int) -> str:
    """Epoch milliseconds as Salesforce prints datetimes: ``2026-11-22T00:00:00.000+0000``."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


def parse_datetime(text: str) -> dt.datetime:
    """Parse the datetime forms Salesforce emits and accepts (``Z``, ``+0000``, ``+00:00``)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.match(r"^(.*[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-])(\d{2}):?(\d{2})$", value)
    if match:
        value = f"{match[1]}{match[2]}{match[3]}:{match[4]}"
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


# --- value coercion --------------------------------------------------------------------------


def coerce_value(obj: ObjectSpec, spec: FieldSpec, value: Any) -> Any:
    """Check and normalise a written value the way the REST API does, or raise ApiError."""
    if value is None:
        if not spec.nillable:
            raise ApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{spec.name}]",
                [spec.name],
            )
        return None
    bad = ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {spec.type} from value {value!r} "
        f"for {obj.name}.{spec.name}",
        [spec.name],
    )
    if spec.type in NUMBER_TYPES:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise bad
        return value
    if not isinstance(value, str):
        raise bad
    if spec.type == "date":
        if not _DATE_RE.match(value):
            raise bad
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise bad from None
        return value
    if spec.type == "datetime":
        try:
            return format_datetime(int(parse_datetime(value).timestamp() * 1000))
        except ValueError:
            raise bad from None
    if spec.type == "reference":
        norm = normalize_id(value)
        if norm is None:
            raise ApiError(
                400,
                "MALFORMED_ID",
                f"{spec.name}: id value of incorrect type: {value}",
                [spec.name],
            )
        return norm
    if len(value) > spec.length:
        raise ApiError(
            400,
            "STRING_TOO_LONG",
            f"{spec.name}: data value too large: {value[:40]} (max length={spec.length})",
            [spec.name],
        )
    return value
