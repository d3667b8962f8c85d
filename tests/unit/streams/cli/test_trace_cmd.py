"""``paybus trace ID`` prints what the records say as they say it (no broker: a made-up trace)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams import trace as trace_module
from streams.cli import app
from streams.trace import Step, Trace

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _traced(monkeypatch: pytest.MonkeyPatch, *steps: Step) -> None:
    def fake(*args: Any, **kwargs: Any) -> Trace:
        return Trace(list(steps), {}, {})

    monkeypatch.setattr(trace_module, "trace", fake)


def test_square_brackets_in_a_record_are_printed_not_taken_as_markup(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    # a PSP's refusal quotes parameter names (Stripe: "metadata[note]"), a CRM user types
    # anything: as rich markup the first vanished and a "[/...]" stopped the command
    refused = "reason Received unknown parameter: metadata[note]"
    _traced(
        monkeypatch,
        Step(AT, "paybus.payments.events", "event failed", "pay-[1]", refused),
        Step(AT, "paybus.dlq", "dead letter (commands)", "pay-[1]", "reason bad [/i] input"),
    )
    result = CliRunner().invoke(app, ["trace", "pay-[1]"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "Received unknown parameter: metadata[note]" in result.stdout
    assert "reason bad [/i] input" in result.stdout


def test_an_empty_id_is_refused_before_reading_anything(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    # The search by bytes matched every record with "": an unrelated payment's story.
    def unreachable(*args: Any, **kwargs: Any) -> Trace:
        raise AssertionError("read the bus for an empty id")

    monkeypatch.setattr(trace_module, "trace", unreachable)
    result = CliRunner().invoke(app, ["trace", " "])
    assert result.exit_code == 2
    assert "give the id to trace" in result.output
