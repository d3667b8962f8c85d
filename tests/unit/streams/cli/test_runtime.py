"""``paybus worker``: what can be checked without Kafka is checked before Kafka is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app


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
