"""The stop watchdog ends a process that does not stop in time, and only such a process."""

from __future__ import annotations

import subprocess
import sys
import time

from streams.stop_watchdog import EXIT_STOP_TIMEOUT

HANGS = """
import logging, time
from streams.stop_watchdog import arm
logging.basicConfig()
arm({limit})
time.sleep({sleep})
"""


def _run(limit: float, sleep: float) -> tuple[subprocess.CompletedProcess[str], float]:
    code = HANGS.format(limit=limit, sleep=sleep)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    return done, time.monotonic() - started


def test_a_process_that_does_not_stop_in_time_exits_with_a_logged_reason() -> None:
    done, took = _run(limit=0.3, sleep=20)
    assert done.returncode == EXIT_STOP_TIMEOUT
    assert "worker did not stop within 0.3 s of the stop signal" in done.stderr
    assert took < 15


def test_a_process_that_ends_first_is_not_held_or_killed() -> None:
    done, took = _run(limit=20, sleep=0.1)
    assert done.returncode == 0, done.stderr
    assert took < 15
