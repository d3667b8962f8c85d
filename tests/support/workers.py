"""Run paybus workers as real subprocesses (``paybus worker`` or a test app) and wait on them."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from streams import processes
from streams.broker import free_port
from streams.processes import ChildProcess

#: Partitions of the topics the integration tests create (``TopicMap(prefix, 8, 1)``): several
#: per stage, as in production, so per-partition work is exercised; the embedded default is 2.
TEST_PARTITIONS = 8


def paybus_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: its own topics, group id, web port and data dir,
    and :data:`TEST_PARTITIONS` unless ``extra`` says otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYBUS_")}
    env.update(
        PAYBUS_PARTITIONS=str(TEST_PARTITIONS),
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
    processes.wait_for(predicate, timeout_s, what, every_s, error=AssertionError)


class WorkerProcess(ChildProcess):
    """A worker subprocess with its log in a file."""

    @classmethod
    def paybus(cls, env: Mapping[str, str], log_path: Path, *args: str) -> WorkerProcess:
        return cls([sys.executable, "-m", "streams.cli", "worker", *args], env, log_path)

    def wait_ready(self, timeout_s: float = 60) -> None:
        self.wait_serving(timeout_s, AssertionError)

    def stop(self, timeout_s: float = 15) -> None:
        super().stop(timeout_s)
