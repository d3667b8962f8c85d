"""The Salesforce sandbox as the benchmarks run it: a subprocess, like the broker.

In the bench process it would share the GIL with the paced publisher and skew every figure;
as its own process it costs what a remote org costs the bus (HTTPS calls), minus the network.
It answers at once: a real org adds tens to hundreds of milliseconds per call, which the
figures here do not include (the notes say so).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.salesforce.sandbox.server import SandboxAdmin
from streams.bench.procs import BenchError

PAYMENT_OBJECT = "Payment__c"


@dataclass(frozen=True)
class SalesforceProc:
    instance_url: str
    cert_path: str
    token: str

    @property
    def admin(self) -> SandboxAdmin:
        return SandboxAdmin(self.instance_url, self.cert_path)

    def worker_env(self, **extra: str) -> dict[str, str]:
        """What a ``crm`` worker needs to write to this org (no polling: write-back only)."""
        return {
            "PAYBUS_SALESFORCE__INSTANCE_URL": self.instance_url,
            "PAYBUS_SALESFORCE__SESSION_ID": self.token,
            "PAYBUS_SALESFORCE__CA_BUNDLE": self.cert_path,
            "PAYBUS_CRM__POLL": "false",
            **extra,
        }

    def seed_payments(self, aggregates: list[str], chunk: int = 5000) -> dict[str, str]:
        """One ``Payment__c`` per aggregate (``External_Id__c``); returns record id -> aggregate."""
        by_id: dict[str, str] = {}
        for start in range(0, len(aggregates), chunk):
            part = aggregates[start : start + chunk]
            ids = self.admin.seed(PAYMENT_OBJECT, [{"External_Id__c": a} for a in part])
            by_id.update(zip(ids, part, strict=True))
        return by_id


@contextlib.contextmanager
def salesforce(workdir: Path, name: str) -> Iterator[SalesforceProc]:
    """Start ``python -m connectors.salesforce.sandbox``; stop it at the end."""
    cert_dir = workdir / f"sf-{name}"
    cert_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.salesforce.sandbox", "--cert-dir", str(cert_dir),
         "--api-limit", "100000000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        found: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while not {"INSTANCE_URL", "CERT_PATH", "TOKEN_INTEGRATION"} <= found.keys():
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise BenchError(f"Salesforce sandbox did not start: {line!r}")
            key, _, value = line.strip().partition("=")
            found[key.removeprefix("SALESFORCE_")] = value
        # Keep reading what it prints, so a full pipe never blocks it.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield SalesforceProc(found["INSTANCE_URL"], found["CERT_PATH"], found["TOKEN_INTEGRATION"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
