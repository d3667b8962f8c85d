"""A production worker refuses the public built-in secrets guarding the endpoints it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.secrets_check import insecure_secrets, placeholder_psp_keys
from streams.settings import Settings

OWN = {
    "PAYBUS_OPS__API_TOKEN": "t0k3n-of-our-own",
    "PAYBUS_STRIPE__WEBHOOK_SECRET": "whsec_of_our_own",
    "PAYBUS_GOCARDLESS__WEBHOOK_SECRET": "gc_of_our_own",
    "PAYBUS_CRM__INGEST_SECRET": "ingest_of_our_own",
}
ALL_ROLES = ["web", "crm"]


def production(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("PAYBUS_PROFILE", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_embedded_profile_keeps_its_defaults(clean_env: Path) -> None:
    assert insecure_secrets(Settings(), ALL_ROLES) == []


def test_production_refuses_every_inbound_default(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = insecure_secrets(production(monkeypatch), ALL_ROLES)
    assert [e.split(" ", 1)[0] for e in errors] == list(OWN)
    assert all("public built-in default" in e for e in errors)


def test_production_with_secrets_of_its_own_starts(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert insecure_secrets(production(monkeypatch, **OWN), ALL_ROLES) == []


@pytest.mark.parametrize(
    ("value", "why"), [("", "is empty"), ("  ", "is empty"), ("whsec_REPLACE_ME", "placeholder")]
)
def test_empty_and_placeholder_secrets_are_refused(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    settings = production(monkeypatch, **{**OWN, "PAYBUS_CRM__INGEST_SECRET": value})
    [error] = insecure_secrets(settings, ALL_ROLES)
    assert error.startswith("PAYBUS_CRM__INGEST_SECRET ") and why in error


def test_only_the_served_endpoints_secrets_are_checked(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = production(monkeypatch)
    assert insecure_secrets(settings, ["sequencer", "router", "connectors"]) == []
    assert [e.split(" ", 1)[0] for e in insecure_secrets(settings, ["crm"])] == [
        "PAYBUS_CRM__INGEST_SECRET"
    ]


def test_a_production_worker_with_a_default_secret_exits_2_before_touching_kafka(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.admin

    created: list[Any] = []
    monkeypatch.setattr(streams.admin, "create_topics", lambda *args: created.append(args))
    production(monkeypatch, **{**OWN, "PAYBUS_OPS__API_TOKEN": "paybus_api_token"})
    result = CliRunner().invoke(app, ["worker", "--role", "web"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: production worker with public or missing secrets")
    assert "PAYBUS_OPS__API_TOKEN" in result.stderr
    assert "paybus_api_token" not in result.stderr.replace("PAYBUS_OPS__API_TOKEN", "")
    assert created == []


def test_a_worker_calling_a_psp_with_the_placeholder_key_is_warned(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    warned = placeholder_psp_keys(settings, ["connectors"])
    assert len(warned) == 2  # both default gateways, real APIs, built-in keys
    assert "PAYBUS_STRIPE__API_KEY is the built-in placeholder" in warned[0]
    assert "PAYBUS_GOCARDLESS__ACCESS_TOKEN" in warned[1]
    assert placeholder_psp_keys(settings, ["crm"]) == []  # no PSP calls
    # the web role registers bank details and reads payment pages' state at the PSP
    assert len(placeholder_psp_keys(settings, ["web"])) == 2
    # an emulator (paybus dev), or a key of one's own: nothing to say
    monkeypatch.setenv("PAYBUS_STRIPE__BASE_URL", "http://127.0.0.1:8420")
    monkeypatch.setenv("PAYBUS_GOCARDLESS__ACCESS_TOKEN", "live_of_our_own")
    assert placeholder_psp_keys(Settings(), ["connectors", "retry"]) == []
