"""The version-guard and no-create validation rules: the shipped metadata, how a refusal is
recognised, and the sandbox's evaluation of the rules (pure: no HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.errors import PermanentError
from connectors.salesforce.guard_rule import (
    MARKER,
    NO_CREATE_RULE_NAME,
    NO_RECORD_MARKER,
    RULE_NAME,
    VALIDATION_CODE,
    formula,
    is_no_record,
    is_refusal,
    message,
    metadata_xml,
    no_create_message,
    no_create_metadata_xml,
)
from connectors.salesforce.sandbox.schema import ApiError
from connectors.salesforce.sandbox.setup_rules import SetupRule, SetupRules
from connectors.salesforce.settings import FieldMap, ObjectMapping

DEPLOY = Path(__file__).parents[4] / "deploy" / "salesforce" / "force-app" / "main" / "default"


@pytest.mark.parametrize("mapping", FieldMap().objects(), ids=lambda m: m.object_name)
def test_the_deployable_rule_is_the_one_the_code_describes(mapping: ObjectMapping) -> None:
    path = (
        DEPLOY / "objects" / mapping.object_name / "validationRules"
        / f"{RULE_NAME}.validationRule-meta.xml"
    )  # fmt: skip
    assert path.read_text() == metadata_xml(mapping)
    assert "Bus_Seq__c &lt; PRIORVALUE(Bus_Seq__c)" in path.read_text()
    no_create = path.with_name(f"{NO_CREATE_RULE_NAME}.validationRule-meta.xml")
    assert no_create.read_text() == no_create_metadata_xml(mapping)
    assert "AND(ISNEW(), NOT(ISBLANK(Bus_Seq__c)))" in no_create.read_text()


def test_only_the_rules_own_refusal_counts_as_older_or_absent() -> None:
    mapping = FieldMap().payment
    assert message(mapping).startswith(MARKER)
    assert no_create_message(mapping).startswith(NO_RECORD_MARKER)
    refused = PermanentError(message(mapping), psp="salesforce", code=VALIDATION_CODE)
    absent = PermanentError(no_create_message(mapping), psp="salesforce", code=VALIDATION_CODE)
    other_rule = PermanentError("Closed period", psp="salesforce", code=VALIDATION_CODE)
    other_code = PermanentError(message(mapping), psp="salesforce", code="REQUIRED_FIELD_MISSING")
    assert is_refusal(refused) and not is_no_record(refused)
    assert is_no_record(absent) and not is_refusal(absent)
    for error in (other_rule, other_code, None):
        assert not is_refusal(error) and not is_no_record(error)


def _rule(active: bool = True) -> SetupRule:
    return SetupRule("Payment__c", "Bus_Seq__c", message(FieldMap().payment), active=active)


@pytest.mark.parametrize(
    ("before", "after", "refused"),
    [
        (None, 5.0, False),  # an insert: no prior value
        ({"Bus_Seq__c": None}, 1.0, False),  # the first write-back
        ({"Bus_Seq__c": 3.0}, 4.0, False),  # newer
        ({"Bus_Seq__c": 3.0}, 3.0, False),  # unchanged: a re-delivery rewrites it
        ({"Bus_Seq__c": 3.0}, 2.0, True),  # older
        ({"Bus_Seq__c": 3.0}, None, True),  # cleared
    ],
)
def test_the_sandbox_evaluates_the_shipped_formula(
    before: dict[str, float | None] | None, after: float | None, refused: bool
) -> None:
    assert "ISCHANGED(Bus_Seq__c)" in formula(FieldMap().payment)
    rules = SetupRules()
    rules.deploy(_rule())
    record = {"Bus_Seq__c": after}
    if not refused:
        rules.check("payment__c", before, record)
        return
    with pytest.raises(ApiError) as caught:
        rules.check("payment__c", before, record)
    assert caught.value.code == VALIDATION_CODE and caught.value.message.startswith(MARKER)


@pytest.mark.parametrize(
    ("before", "after", "refused"),
    [
        (None, 5.0, True),  # an insert carrying a seq: the bus's upsert found no record
        (None, None, False),  # an insert by anyone else
        ({"Bus_Seq__c": None}, 1.0, False),  # an update
    ],
)
def test_the_sandbox_evaluates_the_no_create_formula(
    before: dict[str, float | None] | None, after: float | None, refused: bool
) -> None:
    rules = SetupRules()
    rules.deploy(_rule())
    rules.deploy(
        SetupRule("Payment__c", "Bus_Seq__c", no_create_message(FieldMap().payment),
                     NO_CREATE_RULE_NAME, kind="no_create")
    )  # fmt: skip
    if not refused:
        rules.check("Payment__c", before, {"Bus_Seq__c": after})
        return
    with pytest.raises(ApiError) as caught:
        rules.check("Payment__c", before, {"Bus_Seq__c": after})
    assert caught.value.message.startswith(NO_RECORD_MARKER)
    both = f"ValidationName IN ('{RULE_NAME}', '{NO_CREATE_RULE_NAME}', 'Other')"
    found = rules.tooling_query(f"SELECT ValidationName FROM ValidationRule WHERE {both}")
    assert sorted(r["ValidationName"] for r in found["records"]) == sorted(
        [RULE_NAME, NO_CREATE_RULE_NAME]
    )


def test_an_inactive_rule_or_another_object_is_not_checked() -> None:
    rules = SetupRules()
    rules.deploy(_rule(active=False))
    rules.check("Payment__c", {"Bus_Seq__c": 3.0}, {"Bus_Seq__c": 1.0})
    rules.deploy(_rule())
    rules.check("Refund__c", {"Bus_Seq__c": 3.0}, {"Bus_Seq__c": 1.0})


def test_the_sandbox_tooling_query_answers_validation_rules_only() -> None:
    rules = SetupRules()
    rules.deploy(_rule())
    fields = "ValidationName, Active, ErrorMessage, EntityDefinition.QualifiedApiName"
    found = rules.tooling_query(f"SELECT {fields} FROM ValidationRule WHERE ValidationName = "
                                f"'{RULE_NAME}'")  # fmt: skip
    assert found["totalSize"] == 1
    row = found["records"][0]
    assert row["Active"] is True and row["EntityDefinition"]["QualifiedApiName"] == "Payment__c"
    assert rules.tooling_query(f"SELECT {fields} FROM ValidationRule WHERE "
                               "ValidationName = 'Other'")["records"] == []  # fmt: skip
    for bad in ("SELECT Id FROM ApexClass", "SELECT Metadata FROM ValidationRule"):
        with pytest.raises(ApiError) as caught:
            rules.tooling_query(bad)
        assert caught.value.code == "MALFORMED_QUERY"
