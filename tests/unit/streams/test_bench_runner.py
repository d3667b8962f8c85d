"""``python -m streams.bench.runner``: usage on --help and on bad arguments, no traceback."""

from __future__ import annotations

import subprocess
import sys


def _runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.bench.runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_prints_usage() -> None:
    result = _runner("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m streams.bench.runner")
    assert "--quick" in result.stdout


def test_a_bad_event_count_is_a_usage_error() -> None:
    result = _runner("many")
    assert result.returncode == 2
    assert "invalid int value: 'many'" in result.stderr and "Traceback" not in result.stderr
