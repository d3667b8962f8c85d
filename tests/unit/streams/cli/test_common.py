"""One way to report errors: ``error: <message>``, a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streams.cli import app
from streams.errors import ConfigurationError, PaybusError


def test_a_routing_rules_variable_that_is_not_json_names_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_PARTITIONS", "abc")
    other = CliRunner().invoke(app, ["config"])
    monkeypatch.delenv("PAYBUS_PARTITIONS")
    monkeypatch.setenv("PAYBUS_ROUTING_RULES", "not json")
    result = CliRunner().invoke(app, ["config"])
    assert isinstance(result.exception, SystemExit), result.exception  # not a SettingsError
    # a configuration error, as when a command finds its configuration missing
    assert result.exit_code == other.exit_code == 2
    assert result.stderr.startswith(
        "error: invalid configuration: PAYBUS_ROUTING_RULES: bad JSON: Expecting value"
    ), result.stderr


def test_a_paybus_error_from_a_command_is_reported_not_raised() -> None:
    from streams.cli.common import PaybusGroup

    demo = typer.Typer(cls=PaybusGroup)

    @demo.command("named")
    def named(config: bool = False) -> None:
        raise (ConfigurationError if config else PaybusError)("the thing is wrong")

    @demo.command("other")
    def other() -> None:
        pass

    for args, code in ((["named"], 1), (["named", "--config"], 2)):
        result = CliRunner().invoke(demo, args)
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code == code
        assert result.stderr == "error: the thing is wrong\n"


def test_crm_check_with_half_a_salesforce_login_is_a_clean_configuration_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_SALESFORCE__INSTANCE_URL", "https://x.invalid")
    result = CliRunner().invoke(app, ["crm", "check"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2  # as with no Salesforce settings at all
    assert result.stderr.startswith("error: Salesforce needs PAYBUS_SALESFORCE__INSTANCE_URL")
    assert "SESSION_ID" in result.stderr


def test_crm_check_with_no_salesforce_at_all_says_error_too(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["crm", "check"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no Salesforce org configured")


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {"PAYBUS_PARTITIONS": "abc"},
            ["config"],
            "error: invalid configuration: PAYBUS_PARTITIONS: Input should be a valid integer, "
            "unable to parse string as an integer, got 'abc'\n",
        ),
        (
            {"PAYBUS_SALESFORCE__VERSION_GUARD": "rules"},
            ["config"],
            "error: invalid configuration: PAYBUS_SALESFORCE__VERSION_GUARD: "
            "Input should be 'read' or 'rule', got 'rules'\n",
        ),
        (
            {},
            ["--profile", "prod", "config"],
            "error: invalid configuration: --profile: "
            "Input should be 'embedded' or 'production', got 'prod'\n",
        ),
        (
            {"PAYBUS_GATEWAYS": '[{"name": "a"}]'},
            ["config"],
            "error: invalid configuration: PAYBUS_GATEWAYS: [0].connector: Field required\n",
        ),
        (
            {"PAYBUS_STRIPE__API_KEYS": "x"},
            ["config"],
            "error: invalid configuration: PAYBUS_STRIPE__API_KEYS: not a setting "
            "(see `paybus config` and the README's configuration table)\n",
        ),
    ],
)
def test_a_value_that_does_not_load_is_named_as_the_user_set_it(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    assert result.stderr == expected  # one line: no pydantic class name, codes or links


def test_a_command_waiting_for_kafka_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from streams.cli.common import _BrokerWait

    handler = _BrokerWait("127.0.0.1:1")
    logger = logging.getLogger("test.broker_wait")
    logger.addHandler(handler)
    try:
        for _ in range(3):  # kafka-python logs every retry
            logger.warning(
                "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
                "bootstrap-0", "KafkaConnectionError: 111 ECONNREFUSED", 0.1,
            )  # fmt: skip
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [
        "waiting for Kafka at 127.0.0.1:1: KafkaConnectionError: 111 ECONNREFUSED "
        "(giving up after 30 s)"
    ]


def test_a_session_id_that_does_not_load_is_not_echoed(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_SALESFORCE", '{"session_id": ["00Dsecret!token"]}')
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "salesforce" in result.output.lower() and "00Dsecret" not in result.output
