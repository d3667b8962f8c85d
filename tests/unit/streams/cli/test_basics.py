"""``paybus broker`` on a taken port; ``paybus topics`` help naming what the group does."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from streams.cli import app


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_broker_on_a_taken_port_says_so_and_never_claims_ready(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    result = CliRunner().invoke(app, ["broker", "--port", str(taken_port)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: port {taken_port} is already in use")
    assert "ready" not in result.stdout


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_broker_on_a_port_no_socket_can_have_is_a_usage_error_not_a_traceback(
    port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    result = CliRunner().invoke(app, ["broker", "--port", port])
    assert isinstance(result.exception, SystemExit), result.exception  # not an OverflowError
    assert result.exit_code == 2
    assert "--port" in result.stderr
    assert "ready" not in result.stdout


def test_the_topics_group_help_names_each_of_its_commands() -> None:
    group = typer.main.get_command(app).commands["topics"]  # type: ignore[attr-defined]
    help_text = (group.help or "").lower()
    for name in group.commands:
        assert name in help_text, f"`paybus topics --help` does not mention {name}"
