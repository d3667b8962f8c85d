"""``paybus dlq replay --value-json FILE``: a bad file is named as such, not as a schema misfit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app, dlq_cmd
from streams.dlq_store import Letter

FIXED = {
    "change_id": "c1",
    "aggregate_id": "pay-1",
    "aggregate_type": "payment",
    "intent": "create_payment",
    "occurred_at": 1_700_000_000_000,
    "source": "crm",
    "amount_minor": 1000,
    "currency": "EUR",
}


@pytest.fixture
def replayed(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> list[dict[str, bytes]]:
    """One letter from paybus.crm.changes; replays are recorded, not sent (no broker)."""
    letter = Letter(
        {
            "dead_letter_id": "L1",
            "original_topic": "paybus.crm.changes",
            "original_partition": 0,
            "original_offset": 7,
            "failed_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
    )
    monkeypatch.setattr(dlq_cmd, "_letters", lambda settings: {"L1": letter})
    calls: list[dict[str, bytes]] = []

    def replay(bootstrap: str, topic: str, letters: Any, *, values: dict[str, bytes]) -> list[Any]:
        calls.append(values)
        return list(letters)

    monkeypatch.setattr(dlq_cmd, "replay", replay)
    return calls


def _replay(path: Path) -> Any:
    return CliRunner().invoke(app, ["dlq", "replay", "L1", "--value-json", str(path)])


def test_a_missing_file_is_named_as_missing(replayed: list[Any], clean_env: Path) -> None:
    result = _replay(clean_env / "fixed.json")
    assert result.exit_code == 1
    assert result.stderr == f"error: {clean_env / 'fixed.json'}: no such file\n"
    assert replayed == []


def test_bad_json_is_located_in_the_file(replayed: list[Any], clean_env: Path) -> None:
    path = clean_env / "fixed.json"
    path.write_text('{\n  "change_id": "c1",\n  oops\n}\n')
    result = _replay(path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}:3:3: bad JSON: Expecting property name")
    assert "schema" not in result.stderr and replayed == []


def test_only_a_real_misfit_says_it_does_not_fit_the_schema(
    replayed: list[Any], clean_env: Path
) -> None:
    path = clean_env / "fixed.json"
    path.write_text(json.dumps({**FIXED, "amount_minor": "lots"}))
    result = _replay(path)
    assert result.exit_code == 1
    assert "does not fit paybus.crm.changes's schema" in result.stderr and replayed == []


def test_a_fitting_record_is_replayed_encoded(replayed: list[Any], clean_env: Path) -> None:
    path = clean_env / "fixed.json"
    path.write_text(json.dumps(FIXED))
    result = _replay(path)
    assert result.exit_code == 0, result.output
    assert [set(v) for v in replayed] == [{"L1"}] and replayed[0]["L1"]


def test_what_show_prints_can_be_fixed_and_replayed_as_is(
    replayed: list[Any], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.codec import AvroCodec

    codec = AvroCodec()
    original = {**FIXED, "occurred_at": datetime(2026, 12, 4, 17, 35, 52, 354000, tzinfo=UTC)}
    letter = Letter(
        {
            "dead_letter_id": "L1", "stage": "router", "original_topic": "paybus.crm.changes",
            "original_partition": 0, "original_offset": 7, "aggregate_id": "pay-1",
            "reason": "bad amount", "attempts": 1, "failed_at": datetime(2026, 1, 1, tzinfo=UTC),
            "key": b"pay-1", "error_log": ["bad amount"],
            "value": codec.encode("CrmChange", original),
        }
    )  # fmt: skip
    monkeypatch.setattr(dlq_cmd, "_letters", lambda settings: {"L1": letter})
    shown = CliRunner().invoke(app, ["dlq", "show", "L1"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout[shown.stdout.index("{") :])
    assert record["occurred_at"] == "2026-12-04T17:35:52.354000Z"
    path = clean_env / "fixed.json"
    path.write_text(json.dumps({**record, "amount_minor": 1250}))  # the fix, nothing else
    result = _replay(path)
    assert result.exit_code == 0, result.output
    sent = codec.decode(replayed[0]["L1"], "CrmChange")
    assert sent["occurred_at"] == original["occurred_at"] and sent["amount_minor"] == 1250


def test_a_webhook_letter_shown_on_a_narrow_terminal_replays_its_body_byte_for_byte(
    replayed: list[Any], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.codec import AvroCodec

    codec = AvroCodec()
    body = json.dumps({"id": "evt_1", "type": "charge.dispute.created", "pad": "x" * 300})
    original = {
        "webhook_id": "evt_1", "psp": "stripe", "psp_object_id": "pi_1",
        "received_at": datetime(2026, 12, 4, 17, 35, 52, 354000, tzinfo=UTC),
        "content_type": "application/json", "body": body.encode() + b"\xff",
        "headers": {"stripe-signature": "t=1,v1=" + "ab" * 32},
    }  # fmt: skip
    letter = Letter(
        {
            "dead_letter_id": "L1", "stage": "normaliser", "original_topic": "paybus.psp.webhooks",
            "original_partition": 0, "original_offset": 7, "aggregate_id": None,
            "reason": "no aggregate known", "attempts": 1,
            "failed_at": datetime(2026, 1, 1, tzinfo=UTC), "key": b"pi_1", "error_log": [],
            "value": codec.encode("PspWebhook", original),
        }
    )  # fmt: skip
    monkeypatch.setattr(dlq_cmd, "_letters", lambda settings: {"L1": letter})
    shown = CliRunner().invoke(app, ["dlq", "show", "L1"], terminal_width=80)
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout[shown.stdout.index("{") :])  # not broken into lines
    assert record["body"].startswith('{"id": "evt_1"')  # the body's text, not a bytes repr
    path = clean_env / "fixed.json"
    path.write_text(json.dumps(record))
    result = _replay(path)
    assert result.exit_code == 0, result.output
    assert codec.decode(replayed[0]["L1"], "PspWebhook")["body"] == original["body"]


def test_list_says_when_the_bus_replays_a_letter_by_itself(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    base = {
        "stage": "normaliser", "original_topic": "paybus.psp.webhooks", "original_partition": 0,
        "aggregate_id": None, "reason": "gocardless answered 503", "attempts": 1,
        "failed_at": datetime.now(UTC),
    }  # fmt: skip
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    letters = {
        "W1": Letter({**base, "dead_letter_id": "W1", "original_offset": 1, "retry_at": at}),
        "W2": Letter({**base, "dead_letter_id": "W2", "original_offset": 2, "retry_at": None}),
    }
    monkeypatch.setattr(dlq_cmd, "_letters", lambda settings: letters)
    shown = CliRunner().invoke(app, ["dlq", "list"], terminal_width=250)
    assert shown.exit_code == 0, shown.output
    # the table folds long cells onto the next line: compare the rows without layout
    rows = "".join(shown.stdout.split()).replace("│", "").split("W2")
    assert rows[0].endswith(f"retryingat{at.isoformat()}".replace(" ", ""))
    assert "retrying" not in rows[1]
    details = CliRunner().invoke(app, ["dlq", "show", "W1"], terminal_width=250)
    assert f"closed: no (retrying at {at.isoformat()})" in details.stdout
