"""The rich consoles paybus's commands print through, built one way for all of them.

Rich sizes output that is not a terminal at 80 columns, which truncates the wide tables the
commands print (``demo-mandat…``, the DLQ's columns) in a CI log or a file, and
``FORCE_COLOR``/``TTY_COMPATIBLE`` make it write cursor and redraw escapes (``ESC[?25l``,
``ESC[?25h``) into that file. Output that is not a terminal is read later or by another
program, so it gets plain text as wide as ``COLUMNS`` says (:data:`PLAIN_WIDTH` without it), in
colour only when ``FORCE_COLOR`` asks;
:func:`is_live` tells a command whether redrawing in place makes sense at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Literal

from rich.console import Console

#: Width of output that is not a terminal when ``COLUMNS`` does not say: wide enough for the
#: widest table paybus prints (the dev demo's verdict, ``paybus dlq list``) without cutting.
PLAIN_WIDTH = 160


def is_terminal(stream: IO[str]) -> bool:
    """True when ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def plain_width(environ: Mapping[str, str] | None = None) -> int:
    """Columns for output that is not a terminal: ``COLUMNS`` when set, else :data:`PLAIN_WIDTH`."""
    columns = (os.environ if environ is None else environ).get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PLAIN_WIDTH


def make_console(*, stderr: bool = False, stream: IO[str] | None = None) -> Console:
    """A console on stdout (or stderr, or ``stream``): rich's own on a terminal, plain otherwise.

    Without ``stream`` the console keeps following ``sys.stdout``/``sys.stderr`` (rich looks
    them up on every write), so tests that swap them still capture what it prints.
    """
    target = stream or (sys.stderr if stderr else sys.stdout)
    if is_terminal(target):
        return Console(stderr=stderr, file=stream)
    return Console(
        stderr=stderr,
        file=stream,
        force_terminal=False,
        force_interactive=False,
        width=plain_width(),
        color_system=forced_colors(),
    )


def forced_colors(environ: Mapping[str, str] | None = None) -> Literal["standard"] | None:
    """The colour system for output that is not a terminal: none, unless ``FORCE_COLOR`` asks
    (https://force-color.org; CI logs that render colour set it). Colour only: the cursor
    and redraw escapes stay out either way (the console is still not a terminal)."""
    env = os.environ if environ is None else environ
    if env.get("FORCE_COLOR", "") == "" or env.get("NO_COLOR", "") != "":
        return None
    return "standard"


def is_live(console: Console) -> bool:
    """Whether ``console`` can redraw in place (a live table); otherwise print once, at the end."""
    return console.is_terminal and console.is_interactive
