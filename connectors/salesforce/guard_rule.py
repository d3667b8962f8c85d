"""The version guard inside the org: a validation rule that refuses to move ``Bus_Seq__c`` back.

The writer's own guard reads ``Bus_Seq__c`` and writes only a newer ``seq``. That is two calls,
and it is not atomic: it holds only while one writer owns a record. A worker that stalls past
its session timeout (a long GC pause, a frozen VM) can wake up and finish a write its partition's
new owner has already overtaken, putting an older status back on the record.

A validation rule makes the check part of the write. Salesforce evaluates it in the same
transaction as the update, so no writer, late or not, can lower the stored sequence number. With
the rule deployed (``deploy/salesforce/``, on each object) and
``PAYBUS_SALESFORCE__VERSION_GUARD=rule``, the writer skips the read for every record it can
address by Id: one call per batch instead of two. A refused update is reported as
``skipped_older``, the same outcome the read guard gives.

A second rule, ``Paybus_Bus_No_Create``, spares the read of records addressed by external id
too (updates of payments the bus learnt of by webhook). Such records are written with an upsert
by external id, and the rule refuses the insert half of it: a record that would be created with a
``Bus_Seq__c`` (only the bus sets it) is refused with :data:`NO_RECORD_MARKER`, which the writer
reports as ``not_found``, as the read guard does for a payment the CRM never had. So the bus never
creates a record, and an update by external id costs one call too.

The writer trusts a rule only after finding it deployed and active on each object through the
Tooling API, with its marker at the start of its error message (the marker is how a refusal by
the rule is told apart from any other validation error). An object without the version-guard
rule keeps the read guard; one without the no-create rule reads its records addressed by
external id. The worker says which in its log and in ``paybus_crm_version_guard``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from connectors.errors import ConnectorError

from .client import SalesforceClient, soql_quote
from .settings import ObjectMapping

#: The start of the rule's error message: a refusal carrying it means "an older seq".
MARKER = "PAYBUS_STALE_SEQ"
#: The error code of a validation rule's refusal, per record of a collection call.
VALIDATION_CODE = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
#: The default rule name (``PAYBUS_SALESFORCE__GUARD_RULE``).
RULE_NAME = "Paybus_Bus_Seq_Guard"
#: The start of the no-create rule's message: "no record has this external id".
NO_RECORD_MARKER = "PAYBUS_NO_RECORD"
#: The default no-create rule name (``PAYBUS_SALESFORCE__NO_CREATE_RULE``).
NO_CREATE_RULE_NAME = "Paybus_Bus_No_Create"


def formula(mapping: ObjectMapping) -> str:
    """The rule's error condition: the sequence number changes, and not upwards.

    An unchanged value passes (a re-delivered update rewrites what the record holds), as does a
    record that never had one (the first write-back).
    """
    seq = mapping.bus_seq
    return (
        f"AND(ISCHANGED({seq}), NOT(ISBLANK(PRIORVALUE({seq}))), "
        f"OR(ISBLANK({seq}), {seq} < PRIORVALUE({seq})))"
    )


def message(mapping: ObjectMapping) -> str:
    """The rule's error message (starts with :data:`MARKER`)."""
    return f"{MARKER}: {mapping.bus_seq} may only grow; this update is older than the record."


def no_create_formula(mapping: ObjectMapping) -> str:
    """The no-create rule's error condition: a new record that carries a sequence number.

    Only the bus writes ``Bus_Seq__c``, and it never means to create a record, so this refuses
    exactly the insert half of the bus's upserts and nothing a user or another integration does.
    """
    return f"AND(ISNEW(), NOT(ISBLANK({mapping.bus_seq})))"


def no_create_message(mapping: ObjectMapping) -> str:
    """The no-create rule's error message (starts with :data:`NO_RECORD_MARKER`)."""
    return (
        f"{NO_RECORD_MARKER}: no {mapping.object_name} record has this "
        f"{mapping.external_id}; the bus updates records, it does not create them."
    )


def metadata_xml(mapping: ObjectMapping, name: str = RULE_NAME) -> str:
    """The version-guard rule as Metadata API source (``<name>.validationRule-meta.xml``)."""
    return _xml(
        name,
        "paybus: a status write-back never moves the record back to an older bus sequence "
        "number (atomic version guard).",
        formula(mapping),
        mapping.bus_seq,
        message(mapping),
    )


def no_create_metadata_xml(mapping: ObjectMapping, name: str = NO_CREATE_RULE_NAME) -> str:
    """The no-create rule as Metadata API source."""
    return _xml(
        name,
        "paybus: a status write-back by external id updates an existing record and never "
        "creates one.",
        no_create_formula(mapping),
        mapping.external_id,
        no_create_message(mapping),
    )


def _xml(name: str, description: str, condition: str, field: str, text: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ValidationRule xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        f"    <fullName>{escape(name)}</fullName>\n"
        "    <active>true</active>\n"
        f"    <description>{escape(description)}</description>\n"
        f"    <errorConditionFormula>{escape(condition)}</errorConditionFormula>\n"
        f"    <errorDisplayField>{escape(field)}</errorDisplayField>\n"
        f"    <errorMessage>{escape(text)}</errorMessage>\n"
        "</ValidationRule>\n"
    )


def is_refusal(error: ConnectorError | None) -> bool:
    """Whether a record's write failed because the rule found its ``seq`` older."""
    return _refused_with(error, MARKER)


def is_no_record(error: ConnectorError | None) -> bool:
    """Whether an upsert failed because no record has its external id (the no-create rule)."""
    return _refused_with(error, NO_RECORD_MARKER)


def _refused_with(error: ConnectorError | None, marker: str) -> bool:
    """A validation rule's refusal whose message carries ``marker`` (paybus's own rules)."""
    return error is not None and error.code == VALIDATION_CODE and marker in error.message


@dataclass(frozen=True)
class OrgGuards:
    """Which objects the org's rules guard: ``guarded`` (older seqs refused inside the write)
    and ``upsertable`` (guarded, and inserts by the bus refused too)."""

    guarded: frozenset[str] = frozenset()
    upsertable: frozenset[str] = frozenset()


def org_guards(
    client: SalesforceClient,
    mappings: Iterable[ObjectMapping],
    name: str = RULE_NAME,
    create_name: str = NO_CREATE_RULE_NAME,
) -> OrgGuards:
    """Look both rules up (one Tooling API query): an object counts where the rule is
    deployed on it, active, and its message carries the rule's marker."""
    soql = (
        "SELECT ValidationName, Active, ErrorMessage, EntityDefinition.QualifiedApiName "
        f"FROM ValidationRule WHERE ValidationName IN ({soql_quote(name)}, "
        f"{soql_quote(create_name)})"
    )
    found: dict[str, set[str]] = {MARKER: set(), NO_RECORD_MARKER: set()}
    wanted = {MARKER: name.lower(), NO_RECORD_MARKER: create_name.lower()}
    for row in client.tooling_query(soql):
        entity = row.get("EntityDefinition") or {}
        text, rule = str(row.get("ErrorMessage") or ""), str(row.get("ValidationName", ""))
        for marker, objects in found.items():
            if row.get("Active") is True and rule.lower() == wanted[marker] and marker in text:
                objects.add(str(entity.get("QualifiedApiName", "")).lower())
    names = [m.object_name for m in mappings]
    guarded = frozenset(n for n in names if n.lower() in found[MARKER])
    return OrgGuards(guarded, frozenset(n for n in guarded if n.lower() in found[NO_RECORD_MARKER]))
