"""Validation rules deployed in the sandbox org, and the Tooling API query that lists them.

Unlike the fault-injection rules (``faults.py``: fail the records that match, to test error
handling), these are org configuration, as an admin deploys them, and they survive
``clear_faults``. The sandbox evaluates the two formula shapes paybus ships
(``connectors/salesforce/guard_rule.py``): ``grow_only``, its version guard (a numeric field may
not change to blank or to a smaller value, checked against the record as stored before the
write, ``PRIORVALUE``), and ``no_create`` (a new record may not carry the field, ``ISNEW()``).
Both are checked inside the write, as Salesforce does. Rules are kept in memory: a restarted
sandbox has none until they are deployed again (as its records persist only with ``--db``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .schema import ApiError

_TOOLING = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+ValidationRule"
    r"(?:\s+WHERE\s+ValidationName\s*(?:=\s*(?P<name>'(?:[^'\\]|\\.)*')"
    r"|IN\s*\((?P<names>\s*'(?:[^'\\]|\\.)*'(?:\s*,\s*'(?:[^'\\]|\\.)*')*\s*)\)))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")
_KINDS = ("grow_only", "no_create")
_FIELDS = {"id", "validationname", "active", "errormessage", "entitydefinition.qualifiedapiname"}


@dataclass(frozen=True)
class SetupRule:
    """A rule on ``field`` of ``object``, of one of two kinds. ``grow_only``:
    ``AND(ISCHANGED(f), NOT(ISBLANK(PRIORVALUE(f))), OR(ISBLANK(f), f < PRIORVALUE(f)))``, a
    sequence number that may only grow. ``no_create``: ``AND(ISNEW(), NOT(ISBLANK(f)))``, no
    record is created carrying it."""

    object: str
    field: str
    message: str
    name: str = "Paybus_Bus_Seq_Guard"
    active: bool = True
    kind: str = "grow_only"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SetupRule:
        """From the admin JSON ``{object, field, message, name?, active?, kind?}``."""
        missing = [key for key in ("object", "field", "message") if not data.get(key)]
        if missing:
            raise ApiError(400, "INVALID_RULE", f"a guard rule needs {', '.join(missing)}")
        kind = str(data.get("kind") or cls.kind)
        if kind not in _KINDS:
            raise ApiError(400, "INVALID_RULE", f"kind must be one of {', '.join(_KINDS)}")
        return cls(
            object=str(data["object"]),
            field=str(data["field"]),
            message=str(data["message"]),
            name=str(data.get("name") or cls.name),
            active=bool(data.get("active", True)),
            kind=kind,
        )

    def check(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        """Refuse the write of ``after`` over ``before`` (None: an insert) when it applies."""
        if not self.active:
            return
        if self.kind == "no_create":
            if before is None and after.get(self.field) is not None:
                raise ApiError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", self.message, [self.field])
            return
        if before is None:
            return
        old, new = before.get(self.field), after.get(self.field)
        if old is None or new == old:
            return
        if new is None or new < old:
            raise ApiError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", self.message, [self.field])

    def tooling_row(self, index: int) -> dict[str, Any]:
        """The rule as a Tooling API ``ValidationRule`` record."""
        return {
            "attributes": {"type": "ValidationRule"},
            "Id": f"03d{index:012d}AAA",
            "ValidationName": self.name,
            "Active": self.active,
            "ErrorMessage": self.message,
            "EntityDefinition": {
                "attributes": {"type": "EntityDefinition"},
                "QualifiedApiName": self.object,
            },
        }


class SetupRules:
    """The deployed rules, by object and rule name (deploying a name again replaces it)."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str], SetupRule] = {}

    def deploy(self, rule: SetupRule) -> None:
        """Add or replace the object's rule of that name."""
        self.rules[(rule.object.lower(), rule.name.lower())] = rule

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def check(self, obj: str, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        """Run the object's rules on a write (the first to refuse it answers)."""
        for (on, _), rule in self.rules.items():
            if on == obj.lower():
                rule.check(before, after)

    def to_json(self) -> list[dict[str, Any]]:
        """State for ``GET /_sandbox/validation-rules``."""
        return [asdict(rule) for rule in self.rules.values()]

    def tooling_query(self, text: str) -> dict[str, Any]:
        """Answer ``SELECT ... FROM ValidationRule [WHERE ValidationName = '...']``; anything
        else is refused, so a client asking for more than the sandbox knows finds out."""
        match = _TOOLING.match(text)
        fields = [f.strip().lower() for f in match["fields"].split(",")] if match else []
        if match is None or not fields or not set(fields) <= _FIELDS:
            raise ApiError(
                400,
                "MALFORMED_QUERY",
                "the sandbox Tooling API answers SELECT of Id, ValidationName, Active, "
                "ErrorMessage, EntityDefinition.QualifiedApiName FROM ValidationRule "
                "[WHERE ValidationName = '...' | IN ('...', ...)] only",
            )
        given = match["name"] or match["names"]
        names = (
            None
            if given is None
            else {re.sub(r"\\(.)", r"\1", v).lower() for v in _LITERAL.findall(given)}
        )
        rows = [
            rule.tooling_row(n)
            for n, rule in enumerate(self.rules.values())
            if names is None or rule.name.lower() in names
        ]
        return {"size": len(rows), "totalSize": len(rows), "done": True, "records": rows}
