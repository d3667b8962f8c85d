"""``paybus crm check`` against the sandbox: a ready org passes, and what would make write-backs
fail is named with a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.salesforce.guard_rule import RULE_NAME, message
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.settings import FieldMap
from streams.cli import app


@pytest.fixture
def org_env(sandbox: Sandbox, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("PAYBUS_SALESFORCE__INSTANCE_URL", sandbox.instance_url)
    monkeypatch.setenv("PAYBUS_SALESFORCE__SESSION_ID", sandbox.token_for("integration"))
    monkeypatch.setenv("PAYBUS_SALESFORCE__CA_BUNDLE", str(sandbox.cert_path))
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    return sandbox


def _check() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["crm", "check"], terminal_width=200)
    return result.exit_code, result.output


def test_the_sandbox_org_has_what_the_bus_needs(org_env: Sandbox) -> None:
    code, out = _check()
    assert code == 0, out
    for obj in ("Payment__c", "Mandate__c", "Refund__c"):
        assert obj in out
    assert "Bus_Seq__c" in out and "string, External ID" in out
    assert "not deployed or not active; optional" in out  # the read guard needs no rule
    assert "calls used in the last 24 h" in out
    assert "ok: the org has what the bus needs" in out


def test_rule_guard_without_the_rule_everywhere_fails_naming_the_objects(
    org_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_env.admin.deploy_guard_rule("Payment__c", "Bus_Seq__c", message(FieldMap().payment))
    monkeypatch.setenv("PAYBUS_SALESFORCE__VERSION_GUARD", "rule")
    code, out = _check()
    assert code == 1
    assert "2 problem(s)" in out
    lines = [line for line in out.splitlines() if f"rule {RULE_NAME}" in line]
    assert len(lines) == 3
    assert [("FAIL" in line, "needed by version_guard=rule" in line) for line in lines] == [
        (False, False), (True, True), (True, True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "value", "row"),
    [
        ("MANDATE_OBJECT", "Direct_Debit__c", ("Direct_Debit__c", "object", "cannot describe")),
        ("PAYMENT_OBJECT", "User", ("User", "Status__c", "missing (the writer sets it)")),
    ],
    ids=["object missing", "fields missing"],
)
def test_a_mapping_the_org_cannot_serve_fails_naming_it(
    org_env: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    row: tuple[str, ...],
) -> None:
    monkeypatch.setenv(f"PAYBUS_SALESFORCE__{setting}", value)
    code, out = _check()
    assert code == 1
    assert [line for line in out.splitlines() if all(s in line for s in (*row, "FAIL"))], out


def test_no_org_configured_says_what_to_set(clean_env: Path) -> None:
    code, out = _check()
    assert code == 2
    assert "PAYBUS_SALESFORCE__INSTANCE_URL" in out


def test_a_refused_login_is_one_error_not_a_row_per_object(
    org_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_SALESFORCE__SESSION_ID", "00Dexpired!session")
    code, out = _check()
    assert code == 1
    assert "cannot check the org: the login was refused" in out
    assert "FAIL" not in out and "cannot describe" not in out
