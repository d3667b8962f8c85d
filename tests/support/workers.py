"""Run paybus workers as real subprocesses (``paybus worker`` or a test app) and wait on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.broker import free_port


def paybus_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: its own topics, group id, web port and data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYBUS_")}
    env.update(
        PAYBUS_BOOTSTRAP_SERVERS=bootstrap,
        PAYBUS_TOPIC_PREFIX=prefix,
        PAYBUS_APP_ID=f"{prefix}-app",
        PAYBUS_DATA_DIR=str(data_dir),
        PAYBUS_WEB_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    if os.environ.get("TEST_WORKER_LOG_LEVEL"):  # e.g. "info" to see a worker's rebalances
        env["PAYBUS_LOG_LEVEL"] = os.environ["TEST_WORKER_LOG_LEVEL"]
    env.update(extra)
    return env


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class WorkerProcess:
    """A worker subprocess with its log in a file."""

    args: list[str]
    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def paybus(cls, env: Mapping[str, str], log_path: Path, *args: str) -> WorkerProcess:
        return cls([sys.executable, "-m", "streams.cli", "worker", *args], env, log_path)

    @property
    def web_port(self) -> int:
        return int(self.env["PAYBUS_WEB_PORT"])

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.args,
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/metrics", timeout=2
            ) as r:
                return r.read().decode()
        except OSError:
            return None

    def wait_ready(self, timeout_s: float = 60) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.log_tail()}")
            return self.metrics() is not None

        wait_for(up, timeout_s, f"worker web port {self.web_port}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
