"""Failure alerts: a refused write-back reaches a (local) SMTP server as an e-mail."""

from __future__ import annotations

import datetime as dt
import email
import queue
import socket
import socketserver
import threading
from collections.abc import Iterator
from email.message import Message

import pytest

from connectors.errors import TransientError
from connectors.salesforce.alerts import FailureAlerter, SmtpSettings
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.writer import CrmWriter, Outcome, UpdateResult
from streams.records import StatusUpdate


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    server: _SmtpServer

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._reply("220 localhost test SMTP")
        envelope: dict[str, list[str]] = {"rcpt": []}
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250 localhost")
            elif verb == "MAIL":
                envelope = {"from": [line.decode().strip()], "rcpt": []}
                self._reply("250 OK")
            elif verb == "RCPT":
                envelope["rcpt"].append(line.decode().split(":", 1)[1].strip(" <>\r\n"))
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.server.inbox.put((envelope["rcpt"], email.message_from_bytes(data)))
                self._reply("250 OK queued")
            elif verb == "QUIT":
                self._reply("221 Bye")
                return
            else:
                self._reply("250 OK")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.inbox: queue.Queue[tuple[list[str], Message]] = queue.Queue()


@pytest.fixture
def smtp_server() -> Iterator[_SmtpServer]:
    server = _SmtpServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _settings(port: int) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        sender="paybus@example.org",
        recipients=("payments-team@example.org", "ops@example.org"),
    )


def test_refused_write_back_is_e_mailed_with_record_update_and_error(
    sandbox: Sandbox, smtp_server: _SmtpServer
) -> None:
    ok, bad = sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": "pay-ok"}, {"External_Id__c": "pay-bad"}]
    )
    sandbox.admin.add_rule(obj="Payment__c", record_id=bad, message="Payment period is closed")
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    updates = [
        StatusUpdate(
            event_id=f"evt-{agg}",
            aggregate_id=agg,
            aggregate_type="payment",
            to_status="confirmed",
            occurred_at=now,
            seq=3,
            source="stripe",
            psp_object_id=f"pi_{agg}",
        )
        for agg in ("pay-ok", "pay-bad")
    ]
    report = CrmWriter(SalesforceClient(sandbox.client())).write(updates)
    assert [r.outcome for r in report.results] == [Outcome.WRITTEN, Outcome.FAILED]
    alerter = FailureAlerter(_settings(smtp_server.server_address[1]))
    assert alerter.send(report.results) is True
    rcpt, message = smtp_server.inbox.get(timeout=5)
    assert rcpt == ["payments-team@example.org", "ops@example.org"]
    assert message["Subject"] == f"[paybus] Salesforce write-back failed for {bad}"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert f"Payment__c {bad}" in body and "payment pay-bad" in body
    assert "Payment period is closed" in body and "FIELD_CUSTOM_VALIDATION_EXCEPTION" in body
    assert '"event_id": "evt-pay-bad"' in body and '"seq": 3' in body
    assert '"to_status": "confirmed"' in body
    assert ok not in body and "pay-ok" not in body
    assert smtp_server.inbox.empty()


def test_nothing_to_alert_sends_nothing_and_transient_failures_wait_for_retries(
    sandbox: Sandbox, smtp_server: _SmtpServer
) -> None:
    sandbox.admin.seed("Payment__c", [{"External_Id__c": "pay-1"}])
    sandbox.admin.fail_next(count=1, status=503)
    update = StatusUpdate(
        event_id="e",
        aggregate_id="pay-1",
        aggregate_type="payment",
        to_status="confirmed",
        occurred_at=dt.datetime.now(dt.UTC),
        seq=1,
        source="t",
    )
    report = CrmWriter(SalesforceClient(sandbox.client())).write([update])
    assert report.results[0].should_retry
    assert FailureAlerter(_settings(smtp_server.server_address[1])).send(report.results) is False
    assert smtp_server.inbox.empty()


def test_an_unreachable_relay_is_a_transient_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alerter = FailureAlerter(_settings(port))
    update = StatusUpdate(
        event_id="e",
        aggregate_id="pay-x",
        aggregate_type="payment",
        to_status="confirmed",
        occurred_at=dt.datetime.now(dt.UTC),
        seq=1,
        source="t",
    )
    with pytest.raises(TransientError):
        alerter.send([UpdateResult(update, Outcome.NOT_FOUND, "Payment__c")])
