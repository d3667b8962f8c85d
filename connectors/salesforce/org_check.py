"""Whether an org is ready for the bus: its objects, the fields the writer and the poller use,
the version-guard rule and the API allowance, as this integration user sees them.

``paybus crm check`` prints the findings. It catches what would otherwise surface as failed
write-backs one record at a time: a field missing or read-only for the integration user's
profile, an external id field not marked External ID (records could not be found by aggregate
id), a sequence field that is not a number (the version guard compares it), the rule absent
where ``version_guard=rule`` expects it. The no-create rule is never required: without it,
records named by external id are read before they are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.errors import AuthenticationError, ConnectorError

from .client import SalesforceClient
from .guard_rule import NO_CREATE_RULE_NAME, OrgGuards, org_guards
from .settings import FieldMap, ObjectMapping

#: Salesforce field types the version guard can compare.
NUMERIC_TYPES = frozenset({"double", "int", "long", "currency", "percent"})
#: Share of the daily allowance above which the check warns (the alert fires at the same).
ALLOWANCE_WARN = 0.8


@dataclass(frozen=True)
class Finding:
    """One check: ``ok`` True (fine), False (the bus will fail), None (worth knowing)."""

    subject: str
    check: str
    ok: bool | None
    detail: str


def check_org(
    client: SalesforceClient,
    fields: FieldMap,
    rule_name: str,
    want_rule: bool,
    create_rule: str = NO_CREATE_RULE_NAME,
) -> list[Finding]:
    """Every finding about the org, object by object, then the allowance."""
    findings: list[Finding] = []
    try:
        guards = org_guards(client, fields.objects(), rule_name, create_rule)
        rule_error = None
    except ConnectorError as err:
        guards, rule_error = OrgGuards(), err
    why = f"lookup failed: {rule_error}" if rule_error else "not deployed or not active"
    for mapping in fields.objects():
        obj = mapping.object_name
        findings += _object_findings(client, mapping)
        if obj in guards.guarded:
            findings.append(Finding(obj, f"rule {rule_name}", True, "active"))
        else:
            hint = "needed by version_guard=rule" if want_rule else "optional (deploy/salesforce)"
            findings.append(
                Finding(obj, f"rule {rule_name}", False if want_rule else None, f"{why}; {hint}")
            )
        if obj in guards.upsertable:
            findings.append(Finding(obj, f"rule {create_rule}", True, "active"))
        else:
            findings.append(
                Finding(obj, f"rule {create_rule}", None,
                        f"{why} (or the version-guard rule is not); optional: with both rules, "
                        "records named by external id are written unread")
            )  # fmt: skip
    usage = client.api_usage
    if usage is not None and usage.limit:
        share = usage.used / usage.limit
        findings.append(
            Finding("org", "API allowance", None if share < ALLOWANCE_WARN else False,
                    f"{usage.used:,} of {usage.limit:,} calls used in the last 24 h")
        )  # fmt: skip
    return findings


def _object_findings(client: SalesforceClient, mapping: ObjectMapping) -> list[Finding]:
    obj = mapping.object_name
    try:
        described = client.describe(obj)
    except AuthenticationError:
        raise  # about the login, not this object: one error for the whole check
    except ConnectorError as err:
        return [Finding(obj, "object", False, f"cannot describe it: {err}")]
    by_name: dict[str, dict[str, Any]] = {
        str(f.get("name", "")).lower(): f for f in described["fields"]
    }
    found = [Finding(obj, "object", True, str(described.get("label") or obj))]

    def field(name: str, use: str, must_update: bool) -> dict[str, Any] | None:
        spec = by_name.get(name.lower())
        if spec is None:
            found.append(Finding(obj, name, False, f"missing ({use})"))
        elif must_update and not spec.get("updateable"):
            found.append(Finding(obj, name, False, f"not updateable by this user ({use})"))
        else:
            kind = str(spec.get("type", ""))
            found.append(
                Finding(obj, name, True, kind + (", External ID" * bool(spec.get("externalId"))))
            )
        return spec

    seq = field(mapping.bus_seq, "the version guard", True)
    if seq is not None and seq.get("type") not in NUMERIC_TYPES:
        found.append(Finding(obj, mapping.bus_seq, False, f"is {seq.get('type')}, not a number"))
    for name in sorted(mapping.writeback_fields - {mapping.bus_seq}):
        use = "the writer sets it"
        if name == mapping.payment_page_url:
            use = "payment page links; PAYBUS_SALESFORCE__PAYMENT_PAGE_FIELD= (empty) without pages"
        field(name, use, True)
    ext = field(mapping.external_id, "records are found by aggregate id", False)
    if ext is not None and not ext.get("externalId"):
        found.append(Finding(obj, mapping.external_id, False, "not marked External ID"))
    written = mapping.writeback_fields | {mapping.external_id, "Id"}
    for name in (n for n in mapping.poll_fields if n not in written):
        field(name, "the poller reads it", False)
    return found
