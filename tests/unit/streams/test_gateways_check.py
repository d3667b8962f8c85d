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
