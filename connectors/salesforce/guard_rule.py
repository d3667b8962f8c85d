"""The version guard inside the org: a validation rule that refuses to move ``Bus_Seq__c`` back.

The writer's own guard reads ``Bus_Seq__c`` and writes only a newer ``seq``. That is two calls,
and it is not atomic: it holds only while one writer owns a record. A worker that stalls past
its session timeout (a long GC pause, a frozen VM) can wake up and finish a write its partition's
new owner has already overtaken, putting an older status back on the record.

A validation rule makes the check part of the write. Salesforce evaluates it in the same
transaction as the update, so no writer, late or not, can lower the stored sequence number. With
the rule deployed (``deploy/salesforce/``, one rule per object) and
``PAYBUS_SALESFORCE__VERSION_GUARD=rule``, the writer skips the read for every record it can
address by Id: one call per batch instead of two. A refused update is reported as
``skipped_older``, the same outcome the read guard gives.

The writer trusts the rule only after finding it deployed and active on each object through the
Tooling API, with :data:`MARKER` at the start of its error message (the marker is how a refusal
by this rule is told apart from any other validation error). An object without it keeps the
read guard, and the worker says so in its log and in ``paybus_crm_version_guard``.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def metadata_xml(mapping: ObjectMapping, name: str = RULE_NAME) -> str:
    """The rule as Metadata API source (``<name>.validationRule-meta.xml``)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ValidationRule xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        f"    <fullName>{escape(name)}</fullName>\n"
        "    <active>true</active>\n"
        "    <description>paybus: a status write-back never moves the record back to an older "
        "bus sequence number (atomic version guard).</description>\n"
        f"    <errorConditionFormula>{escape(formula(mapping))}</errorConditionFormula>\n"
        f"    <errorDisplayField>{escape(mapping.bus_seq)}</errorDisplayField>\n"
        f"    <errorMessage>{escape(message(mapping))}</errorMessage>\n"
        "</ValidationRule>\n"
    )


def is_refusal(error: ConnectorError | None) -> bool:
    """Whether a record's write failed because the rule found its ``seq`` older."""
    return error is not None and error.code == VALIDATION_CODE and MARKER in error.message


def guarded_objects(
    client: SalesforceClient, mappings: Iterable[ObjectMapping], name: str = RULE_NAME
) -> frozenset[str]:
    """The objects of ``mappings`` on which the rule ``name`` is deployed, active and carries
    :data:`MARKER` (one Tooling API query)."""
    soql = (
        "SELECT ValidationName, Active, ErrorMessage, EntityDefinition.QualifiedApiName "
        f"FROM ValidationRule WHERE ValidationName = {soql_quote(name)}"
    )
    found: set[str] = set()
    for row in client.tooling_query(soql):
        entity = row.get("EntityDefinition") or {}
        if row.get("Active") is True and MARKER in str(row.get("ErrorMessage") or ""):
            found.add(str(entity.get("QualifiedApiName", "")).lower())
    return frozenset(m.object_name for m in mappings if m.object_name.lower() in found)
