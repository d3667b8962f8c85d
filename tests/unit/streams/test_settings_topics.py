"""Settings, the topic map and the records' agreement with the Avro contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import SCHEMA_DIR
from streams.records import RECORDS
from streams.settings import Settings
from streams.settings_check import unknown_variables
from streams.topics import TopicMap


def test_embedded_profile_defaults(clean_env: Path) -> None:
    s = Settings()
    assert s.profile == "embedded"
    assert s.effective_session_timeout_s == 2.0
    assert s.effective_replication_factor == 1
    assert s.web_host == "127.0.0.1"


def test_production_profile_and_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYBUS_PROFILE", "production")
    monkeypatch.setenv("PAYBUS_STRIPE__API_KEY", "sk_live_secret")
    monkeypatch.setenv("PAYBUS_PARTITIONS", "12")
    s = Settings()
    assert s.effective_session_timeout_s == 10.0
    assert s.effective_replication_factor == 3
    assert s.partitions == 12
    assert s.stripe.api_key.get_secret_value() == "sk_live_secret"
    masked = json.dumps(s.masked())
    assert "sk_live_secret" not in masked
    assert s.masked()["stripe"]["api_key"] == "**********"


def test_partitions_default_by_profile_and_a_value_set_is_kept(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # embedded: 2 (Tansu's work per fetch grows with partitions); production: 8
    assert Settings().partitions == 2
    assert Settings(profile="production").partitions == 8
    assert Settings(partitions=8).partitions == 8  # set, even to production's: kept
    monkeypatch.setenv("PAYBUS_PARTITIONS", "5")
    assert Settings().partitions == 5
    assert Settings(profile="production").partitions == 5
    assert TopicMap.from_settings(Settings()).payment_events.partitions == 5


def test_settings_are_frozen_and_validated(clean_env: Path) -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.partitions = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(partitions=0)


def test_retry_delays_are_positive_and_a_command_is_retried_once_at_least(
    clean_env: Path,
) -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings(retry_schedule_s=(60.0, -1.0))
    with pytest.raises(ValidationError, match="at least 1"):
        Settings(retry_schedule_s=())  # the first parking takes its first delay
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings(normaliser_retry_schedule_s=(0.0,))
    assert Settings(normaliser_retry_schedule_s=()).normaliser_retry_schedule_s == ()  # off


def test_config_shows_the_page_links_base_in_effect(clean_env: Path) -> None:
    # the embedded web role serves the pages itself; production has none until one is set
    assert Settings().masked()["pages"]["public_url"] == "http://127.0.0.1:6066"
    assert Settings(profile="production").masked()["pages"]["public_url"] is None
    public = Settings(profile="production", pages={"public_url": "https://pay.example.com/"})
    assert public.masked()["pages"]["public_url"] == "https://pay.example.com"


def test_topic_map_matches_design(clean_env: Path) -> None:
    names = [t.name for t in TopicMap.from_settings(Settings()).all()]
    assert names == [
        "paybus.crm.changes",
        "paybus.psp.webhooks",
        "paybus.commands.stripe",
        "paybus.commands.gocardless",
        "paybus.payments.events",
        "paybus.payments.status",
        "paybus.retry",
        "paybus.dlq",
    ]
    tm = TopicMap("x", 3, 1)
    assert {t.partitions for t in tm.all()} == {3}
    assert tm.by_name("x.dlq").value_schema == "DeadLetter"
    assert all((SCHEMA_DIR / f"{t.value_schema}.avsc").exists() for t in tm.all())


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_fields_match_schema(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    schema_fields = {f["name"] for f in schema["fields"]}
    record_fields = set(RECORDS[name]._options.fields)
    assert record_fields == schema_fields


def test_a_password_in_a_url_setting_is_masked(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_SCHEMA_REGISTRY_URL", "https://bus:s3cr3t-pw@registry.example:8081")
    monkeypatch.setenv("PAYBUS_SALESFORCE__INSTANCE_URL", "https://example.my.salesforce.com")
    masked = Settings().masked()
    assert masked["schema_registry_url"] == "https://bus:**********@registry.example:8081"
    assert "s3cr3t-pw" not in json.dumps(masked)
    assert masked["salesforce"]["instance_url"] == "https://example.my.salesforce.com"


def test_a_variable_that_names_no_setting_is_said_with_the_nearest_one() -> None:
    environ = {
        "PAYBUS_PARTITION": "4",  # a typo: the default 8 stayed in effect, silently
        "PAYBUS_STRIPE_API_KEY": "sk_live_x",  # one underscore: not the section's field
        "PAYBUS_PARTITIONS": "8",
        "PAYBUS_STRIPE__API_KEY": "sk_live_y",  # a section's field: the section checks it
        "PAYBUS_GOCARDLESS_SANDBOX_TOKEN": "t",  # the sandbox's own
        "PAYBUS_FAULT_OUTAGE_S": "8",  # a test's knob
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "PAYBUS_PARTITION is not a setting and is ignored (did you mean PAYBUS_PARTITIONS?)",
        "PAYBUS_STRIPE_API_KEY is not a setting and is ignored "
        "(did you mean PAYBUS_STRIPE__API_KEY?)",
    ]
    assert unknown_variables({"PAYBUS_ZZZ": "1"}) == ["PAYBUS_ZZZ is not a setting and is ignored"]


def test_the_variables_the_project_s_own_files_set_are_not_said() -> None:
    # deploy/compose interpolates ${PAYBUS_VERSION} and ${PAYBUS_WORKERS} from the shell that
    # runs `docker compose`, the same shell an operator then runs `paybus lag` in
    root = Path(__file__).parents[3]
    found: set[str] = set()
    for path in [*(root / "deploy").rglob("*"), root / "Makefile", *(root / ".ci").rglob("*")]:
        if path.is_file() and path.suffix not in (".xml", ".md"):  # Salesforce rule markers
            found |= set(re.findall(r"\bPAYBUS_[A-Z0-9_]+", path.read_text(errors="replace")))
    assert "PAYBUS_WORKERS" in found
    assert unknown_variables(dict.fromkeys(found, "1")) == []


def test_a_lowercase_variable_is_checked_as_the_settings_read_it() -> None:
    # pydantic-settings reads variable names case-insensitively
    assert unknown_variables({"paybus_partitions": "4"}) == []
    assert unknown_variables({"paybus_partiton": "4"}) == [
        "PAYBUS_PARTITON is not a setting and is ignored (did you mean PAYBUS_PARTITIONS?)"
    ]
