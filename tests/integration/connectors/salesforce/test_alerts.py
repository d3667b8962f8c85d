"""Failure alerts: a refused write-back reaches a (local) SMTP server as an e-mail."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import queue
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from connectors.errors import TransientError
from connectors.salesforce.alerts import FailureAlerter, SmtpSettings
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.sandbox.tls import generate_cert
from connectors.salesforce.writer import CrmWriter, Outcome, UpdateResult
from streams.records import StatusUpdate

#: The submission relay's account (user, password).
RELAY_LOGIN = ("paybus-alerts", "relay-password-1")


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT; and, when the server is
    given a certificate and credentials, STARTTLS and AUTH PLAIN as a submission relay
    demands them: no login before TLS, no mail before a login."""

    server: _SmtpServer

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def _starttls(self, tls: ssl.SSLContext) -> None:
        self._reply("220 2.0.0 Ready to start TLS")
        self.connection = self.request = tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb", buffering=0)

    def handle(self) -> None:
        self._reply("220 localhost test SMTP")
        envelope: dict[str, list[str]] = {"rcpt": []}
        secure = authed = False
        tls, login = self.server.tls, self.server.login
        while line := self.rfile.readline():
            text = line.decode().strip()
            verb = text.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                offers = (["STARTTLS"] if tls and not secure else []) + (
                    ["AUTH PLAIN"] if login and (secure or not tls) else []
                )
                lines = ["localhost", *offers]  # the greeting first, then the extensions
                for n, item in enumerate(lines, start=1):
                    self._reply(f"250{' ' if n == len(lines) else '-'}{item}")
            elif verb == "STARTTLS" and tls is not None and not secure:
                self._starttls(tls)
                secure = True
            elif verb == "AUTH" and login is not None:
                if tls is not None and not secure:
                    self._reply("530 5.7.0 Must issue a STARTTLS command first")
                    continue
                given = base64.b64decode(text.split()[-1]).split(b"\0")[1:]
                authed = tuple(part.decode() for part in given) == login
                self._reply("235 2.7.0 Accepted" if authed else "535 5.7.8 Bad credentials")
            elif verb == "MAIL":
                if login is not None and not authed:
                    self._reply("530 5.7.0 Authentication required")
                    continue
                envelope = {"from": [text], "rcpt": []}
                self._reply("250 OK")
            elif verb == "RCPT":
                envelope["rcpt"].append(text.split(":", 1)[1].strip(" <>"))
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
    """An open relay; or, with ``cert_dir`` and ``login``, one that takes mail only after
    STARTTLS (a fresh self-signed certificate, ``cert_path``) and that login."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cert_dir: Path | None = None, login: tuple[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.inbox: queue.Queue[tuple[list[str], Message]] = queue.Queue()
        self.login = login
        self.tls: ssl.SSLContext | None = None
        self.cert_path: Path | None = None
        if cert_dir is not None:
            self.cert_path, key = generate_cert(cert_dir)
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(self.cert_path, key)


def _serve(server: _SmtpServer) -> Iterator[_SmtpServer]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smtp_server() -> Iterator[_SmtpServer]:
    yield from _serve(_SmtpServer())


@pytest.fixture
def submission_relay(tmp_path: Path) -> Iterator[_SmtpServer]:
    """A relay like Office 365's or SES's port 587: STARTTLS, then a login."""
    yield from _serve(_SmtpServer(tmp_path / "smtp-tls", login=RELAY_LOGIN))


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


def _not_found() -> UpdateResult:
    update = StatusUpdate(
        event_id="e",
        aggregate_id="pay-gone",
        aggregate_type="payment",
        to_status="confirmed",
        occurred_at=dt.datetime.now(dt.UTC),
        seq=1,
        source="t",
    )
    return UpdateResult(update, Outcome.NOT_FOUND, "Payment__c")


def test_a_submission_relay_gets_the_alert_over_starttls_after_a_login(
    submission_relay: _SmtpServer,
) -> None:
    plain = _settings(submission_relay.server_address[1])
    # Without TLS and a login the relay takes nothing: the alert is not lost silently.
    with pytest.raises(TransientError, match="Authentication required"):
        FailureAlerter(plain).send([_not_found()])
    assert submission_relay.cert_path is not None
    secure = dataclasses.replace(
        plain, starttls=True, username=RELAY_LOGIN[0], password=RELAY_LOGIN[1],
        ca_bundle=str(submission_relay.cert_path),
    )  # fmt: skip
    assert FailureAlerter(secure).send([_not_found()]) is True
    rcpt, message = submission_relay.inbox.get(timeout=5)
    assert rcpt == ["payments-team@example.org", "ops@example.org"]
    assert message["Subject"] == "[paybus] Salesforce write-back failed for pay-gone"


def test_starttls_refuses_a_relay_whose_certificate_is_not_trusted(
    submission_relay: _SmtpServer,
) -> None:
    """The password goes only to a relay that proves who it is (smtplib's own default
    context would send it to any certificate)."""
    settings = dataclasses.replace(
        _settings(submission_relay.server_address[1]),
        starttls=True, username=RELAY_LOGIN[0], password=RELAY_LOGIN[1],
    )  # fmt: skip
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        FailureAlerter(settings).send([_not_found()])
    assert submission_relay.inbox.empty()
