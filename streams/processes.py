"""Child processes started by paybus's own tooling: workers and the embedded broker.

Each runs in a session of its own (``start_new_session``), so stopping it reaches whatever it
started in turn (a Faust worker's threads, a shell wrapper's child): SIGTERM to the whole
group, then SIGKILL if it has not gone within the timeout. The dev stack, the benchmarks and
the tests all stop their children this way, and read a worker's readiness the same way: its
``/metrics`` page answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


def stop_group(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``timeout_s``; no-op once exited."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc, timeout_s)


def kill_group(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGKILL ``proc``'s process group, no goodbye: what a crash looks like."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout_s)


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    every_s: float = 0.2,
    error: type[Exception] = TimeoutError,
) -> None:
    """Poll ``predicate`` until it holds; raise ``error`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise error(f"timed out after {timeout_s:.0f}s waiting for {what}")


@dataclass
class ChildProcess:
    """A subprocess with its output in a log file, in a process group of its own."""

    args: list[str]
    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def web_port(self) -> int:
        """The port of a paybus worker's web server (its ``PAYBUS_WEB_PORT``)."""
        return int(self.env["PAYBUS_WEB_PORT"])

    @property
    def web_url(self) -> str:
        """Where the worker's web server answers (``PAYBUS_WEB_HOST``, loopback by default)."""
        return f"http://{self.env.get('PAYBUS_WEB_HOST', '127.0.0.1')}:{self.web_port}"

    def start(self) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.args,
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def metrics_text(self) -> str | None:
        """The worker's ``/metrics`` page, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.web_url}/metrics", timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            return None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def exit_message(self) -> str | None:
        """Why the process is gone (exit status and the end of its log), or None if running."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return (
            f"{self.args[2:]} exited {self.proc.returncode} (log {self.log_path}): "
            f"{self.log_tail(2000)}"
        )

    def wait_serving(self, timeout_s: float, error: type[Exception]) -> None:
        """Wait until the worker's web page answers; ``error`` if it exits or times out."""

        def up() -> bool:
            if (gone := self.exit_message()) is not None:
                raise error(f"worker {gone}")
            return self.metrics_text() is not None

        wait_for(up, timeout_s, f"the worker's web server at {self.web_url}", error=error)

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_group(self.proc, timeout_s)

    def kill(self) -> None:
        kill_group(self.proc)
