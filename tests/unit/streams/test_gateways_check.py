"""``paybus gateways check``: errors that say what to change, and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app


def test_default_gateways_pass(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["gateways", "check"])
    assert result.exit_code == 0, result.output
    assert "ok: 2 gateway(s) [stripe (stripe), gocardless (gocardless)], 2 rule(s)" in (
        result.output
    )  # the bracketed list is text, not Rich markup to be swallowed


def test_bad_gateways_fail_with_what_to_change(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateways = [
        {"name": "adyen", "connector": "adyen", "methods": ["card"], "currencies": ["EUR"]},
        {"name": "gc", "connector": "gocardless", "methods": ["direct_debit"],
         "currencies": ["JPY"]},
    ]  # fmt: skip
    monkeypatch.setenv("PAYBUS_GATEWAYS", json.dumps(gateways))
    monkeypatch.setenv("PAYBUS_ROUTING_RULES", json.dumps([{"gateway": "gc"}]))
    result = CliRunner().invoke(app, ["gateways", "check"])
    assert result.exit_code == 1
    assert "connector 'adyen' is not installed" in result.output
    assert "needs at least one of its currencies" in result.output


def test_a_method_no_rule_routes_is_warned_and_a_default_rule_is_named(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rules replaced and the direct-debit one forgotten: such payments would all fail
    monkeypatch.setenv(
        "PAYBUS_ROUTING_RULES", json.dumps([{"gateway": "stripe", "methods": ["card"]}])
    )
    result = CliRunner().invoke(app, ["gateways", "check"])
    assert result.exit_code == 0, result.output  # a record naming its gateway still works
    assert "warning: no routing rule sends direct_debit payments in GBP" in result.output
    assert "warning: no routing rule sends direct_debit payments in EUR" in result.output
    assert "sends card" not in result.output
    # gateways set, rules left at their defaults, which name a gateway that is gone
    monkeypatch.delenv("PAYBUS_ROUTING_RULES")
    only = [{"name": "stripe", "connector": "stripe", "methods": ["card"], "currencies": ["EUR"]}]
    monkeypatch.setenv("PAYBUS_GATEWAYS", json.dumps(only))
    result = CliRunner().invoke(app, ["gateways", "check"])
    assert result.exit_code == 1
    assert (
        "error: routing rule 1: gateway 'gocardless' is not configured (a default routing rule; "
        "set PAYBUS_ROUTING_RULES to route to yours)"
    ) in " ".join(result.output.split())
