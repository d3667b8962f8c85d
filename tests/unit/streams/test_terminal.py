"""Consoles on output that is not a terminal: plain text, wide enough, no escapes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.terminal import PLAIN_WIDTH, forced_colors, is_live, make_console, plain_width


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def wide_table() -> Table:
    table = Table(title="dead letters")
    for col in ("id", "stage", "where", "aggregate", "reason", "attempts", "failed_at"):
        table.add_column(col)
    table.add_row(
        "dl-0001", "sequencer", "paybus.payments.events[3]@1234", "demo-mandate-01",
        "rejected: transition", "3", "2026-03-01T12:00:00+00:00",
    )  # fmt: skip
    return table


def printed_to_a_file() -> tuple[Console, str]:
    """A live table and a red line printed by a console on a file; the console and the text."""
    out = io.StringIO()
    console = make_console(stream=out)
    with Live(wide_table(), console=console):
        pass
    console.print("[red]done[/]")
    return console, out.getvalue()


def test_a_file_gets_plain_text_wide_enough_for_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    console, text = printed_to_a_file()
    assert "\x1b" not in text  # no cursor (ESC[?25h), redraw or colour codes
    assert "demo-mandate-01" in text and "2026-03-01T12:00:00+00:00" in text
    assert console.width == PLAIN_WIDTH and not is_live(console)


def test_force_color_colours_a_file_without_cursor_escapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich alone would also redraw into the file
    console, text = printed_to_a_file()
    assert "\x1b[31mdone" in text  # the colour asked for
    assert "\x1b[?25" not in text and "\x1b[2K" not in text  # no cursor hiding, no redraw
    assert not is_live(console)
    monkeypatch.setenv("NO_COLOR", "1")  # NO_COLOR wins (no-color.org)
    assert forced_colors() is None


def test_columns_sets_the_width_of_plain_output() -> None:
    assert plain_width({"COLUMNS": "200"}) == 200
    assert plain_width({"COLUMNS": "wide"}) == plain_width({}) == PLAIN_WIDTH


def test_a_terminal_keeps_rich_own_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    console = make_console(stream=Tty())
    assert console.is_terminal and is_live(console)
