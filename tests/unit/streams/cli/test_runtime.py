"""``paybus worker``: what can be checked without Kafka is checked before Kafka is touched,
and what the worker's Faust subclass changes about Faust's start-up (no broker)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.runtime import worker_class


def test_an_unknown_role_is_refused_before_any_topic_is_created(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.admin

    created: list[Any] = []
    monkeypatch.setattr(streams.admin, "create_topics", lambda *args: created.append(args))
    result = CliRunner().invoke(app, ["worker", "--role", "sequencer", "--role", "bogus"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown role(s) bogus; known: sequencer")
    assert created == []


def test_an_invalid_gateway_configuration_stops_the_worker_before_any_topic_is_created(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateways are validated before use (the ProntoPayments seed): a Stripe gateway taking
    bank debits without 3-D Secure or AUD stops the worker with what to change, instead of
    failing payments one by one."""
    import streams.admin

    created: list[Any] = []
    monkeypatch.setattr(streams.admin, "create_topics", lambda *args: created.append(args))
    gateway = {"name": "stripe", "connector": "stripe", "methods": ["card", "direct_debit"],
               "currencies": ["EUR"]}  # fmt: skip
    monkeypatch.setenv("PAYBUS_GATEWAYS", json.dumps([gateway]))
    monkeypatch.setenv("PAYBUS_ROUTING_RULES", json.dumps([{"gateway": "stripe"}]))
    result = CliRunner().invoke(app, ["worker", "--role", "router"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid gateway configuration")
    assert "options.three_d_secure" in result.stderr
    assert "need 'AUD' in 'currencies'" in result.stderr
    assert created == []


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FaustWorker:
    """What worker_class needs of faust.Worker: it builds a spinner on ``stdout``."""

    def __init__(self, stdout: Any) -> None:
        self.stdout = stdout
        self.spinner: object | None = object()


def test_no_spinner_when_stdout_is_a_file() -> None:
    # Faust finishes the spinner with ESC[?25h whatever the stream: worker logs began with it.
    assert worker_class(FaustWorker)(io.StringIO()).spinner is None


def test_the_spinner_stays_on_a_terminal() -> None:
    assert worker_class(FaustWorker)(Tty()).spinner is not None
