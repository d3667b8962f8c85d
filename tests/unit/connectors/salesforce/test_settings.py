"""Field mapping and client factory of the Salesforce connector (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.salesforce.settings import FieldMap, build_salesforce, build_session
from streams.errors import ConfigurationError
from streams.settings import SalesforceSettings


def test_object_names_come_from_the_settings() -> None:
    fields = FieldMap.from_settings(
        SalesforceSettings(payment_object="Zahlung__c", refund_object="Erstattung__c")
    )
    assert [m.object_name for m in fields.objects()] == [
        "Zahlung__c",
        "Mandate__c",
        "Erstattung__c",
    ]
    assert fields.for_type("payment") is fields.payment and fields.for_type("invoice") is None
    assert fields.refund.payment_lookup == "Payment__c" and fields.payment.payment_lookup is None
    assert "Payment__c" in fields.refund.poll_fields
    assert fields.payment.writeback_fields == {
        "Status__c",
        "Psp_Id__c",
        "Bus_Seq__c",
        "Settlement_Date__c",
        "Failure_Reason__c",
        "Payment_Page_URL__c",
    }
    assert "Payment_Page_URL__c" not in fields.refund.writeback_fields
    without = FieldMap.from_settings(SalesforceSettings(payment_page_field=""))
    assert without.payment.payment_page_url is None


def test_a_ca_bundle_turns_off_the_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    session = build_session(SalesforceSettings(ca_bundle=bundle))
    assert session.trust_env is False and session.verify == str(bundle)
    assert build_session(SalesforceSettings()).trust_env is True


def test_session_id_login_makes_no_call_and_missing_credentials_are_explained() -> None:
    sf = build_salesforce(
        SalesforceSettings(instance_url="https://example.my.salesforce.com", session_id="tok")  # type: ignore[arg-type]
    )
    assert sf.base_url == "https://example.my.salesforce.com/services/data/v59.0/"
    with pytest.raises(ConfigurationError, match="SESSION_ID"):
        build_salesforce(SalesforceSettings(instance_url="https://example.my.salesforce.com"))


def test_an_smtp_login_without_starttls_is_refused() -> None:
    """smtplib logs in whenever the relay offers AUTH: without STARTTLS the alert relay's
    password would cross the network in clear text."""
    from pydantic import ValidationError

    from connectors.salesforce.alerts import FailureAlerter, SmtpSettings
    from streams.settings import CrmSettings

    login = {"alert_smtp_host": "relay", "alert_smtp_username": "u", "alert_smtp_password": "p"}
    with pytest.raises(ValidationError, match="alert_smtp_starttls"):
        CrmSettings.model_validate(login)
    assert CrmSettings.model_validate({**login, "alert_smtp_starttls": True}).alert_smtp_starttls
    plain = SmtpSettings("relay", 25, "a@b", ("c@d",), username="u", password="p")
    with pytest.raises(ValueError, match="STARTTLS"):
        FailureAlerter(plain)
