"""``paybus publish`` and ``paybus sequence`` given a bad file; ``paybus schemas freeze``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app

GOOD = json.dumps(
    {
        "change_id": "c1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "intent": "create_payment",
        "occurred_at": "2026-11-22T10:00:00Z",
        "source": "crm",
        "amount_minor": 1000,
        "currency": "EUR",
    }
)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What ``publish`` hands to Kafka (a stand-in Publisher: no broker)."""
    import streams.publisher

    sent: list[Any] = []

    class FakePublisher:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> FakePublisher:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def publish_crm_changes(self, records: list[Any]) -> list[Any]:
            sent.extend(records)
            raise AssertionError("nothing may be published from a file that is not text")

    monkeypatch.setattr(streams.publisher, "Publisher", FakePublisher)
    return sent


def test_publish_names_the_line_of_a_byte_that_is_not_utf8_and_publishes_nothing(
    clean_env: Path, published: list[Any]
) -> None:
    path = clean_env / "changes.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + GOOD.encode() + b"\n\xff\xfe\n")
    result = CliRunner().invoke(app, ["publish", "crm-changes", str(path)])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}:3: not UTF-8 text (byte 0xff at column 1")
    assert published == []


def test_publish_missing_file(clean_env: Path, published: list[Any]) -> None:
    result = CliRunner().invoke(app, ["publish", "crm-changes", "nope.jsonl"])
    assert result.exit_code == 1 and result.stderr == "error: nope.jsonl: no such file\n"


def test_publish_and_sequence_word_bad_json_alike(clean_env: Path, published: list[Any]) -> None:
    path = clean_env / "bad.jsonl"
    path.write_text('{"change_id": \n')
    publish = CliRunner().invoke(app, ["publish", "crm-changes", str(path)])
    sequence = CliRunner().invoke(app, ["sequence", "-i", str(path)])
    assert publish.exit_code == sequence.exit_code == 1
    expected = f"{path}:1:15: bad JSON: Expecting value"
    assert publish.stderr.splitlines()[0] == expected
    assert sequence.stderr.splitlines()[0] == expected


@pytest.mark.parametrize("stdin", [False, True])
def test_sequence_names_the_line_of_a_byte_that_is_not_utf8(clean_env: Path, stdin: bool) -> None:
    path = clean_env / "history.jsonl"
    path.write_bytes(b"\n\xff\xfe\n")
    args, data = (["-i", "-"], path.read_bytes()) if stdin else (["-i", str(path)], None)
    result = CliRunner().invoke(app, ["sequence", *args], input=data)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    name = "<stdin>" if stdin else str(path)
    assert result.stderr.startswith(f"error: {name}:2: not UTF-8 text"), result.stderr


def _release_copy(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Freeze into a copy of schemas/ (never the repository's release file)."""
    from streams import schema_check

    copy = tmp / "schemas"
    shutil.copytree(schema_check.SCHEMA_DIR, copy)
    real = schema_check.freeze
    monkeypatch.setattr(schema_check, "freeze", lambda version: real(version, copy))
    return copy / "release.json"


@pytest.mark.parametrize("version", ["", "  "])
def test_schemas_freeze_refuses_an_empty_version(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    release = _release_copy(clean_env, monkeypatch)
    before = release.read_text()
    result = CliRunner().invoke(app, ["schemas", "freeze", version])
    assert result.exit_code == 1
    assert "release version is empty" in result.stderr
    assert release.read_text() == before


def test_schemas_freeze_writes_a_named_version(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = _release_copy(clean_env, monkeypatch)
    result = CliRunner().invoke(app, ["schemas", "freeze", "9.9.9"])
    assert result.exit_code == 0, result.output
    assert json.loads(release.read_text())["release"] == "9.9.9"
