"""E-mail alerts for write-backs Salesforce refused.

A status the CRM refuses to store (a validation rule, a deleted record) leaves staff looking at
a wrong payment status, and retrying cannot fix it; as in the Asperato integration, the details
(record, update, error) go by e-mail to a configured address or list, so a person can act. One
message per batch lists every failure, so a misconfigured rule produces one mail, not hundreds.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from connectors.errors import TransientError

from .writer import Outcome, UpdateResult


@dataclass(frozen=True)
class SmtpSettings:
    """Where alerts go: an SMTP relay, the sender and one or more recipients."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    #: CA bundle the relay's certificate is verified against (None: the system CAs).
    ca_bundle: str | None = None
    timeout_s: float = 10.0
    subject_prefix: str = "[paybus]"


def describe_failure(result: UpdateResult) -> str:
    """One failure as plain text: the record, the update and the error."""
    update = result.update
    error = result.error
    lines = [
        f"Record:        {result.object_name or '?'} {result.record_id or '(not found)'}",
        f"Aggregate:     {update.aggregate_type} {update.aggregate_id}",
        f"Outcome:       {result.outcome.value}",
        f"Error:         {error.message if error else 'no matching CRM record'}",
    ]
    if error is not None:
        lines += [
            f"Error code:    {error.code or '-'}",
            f"HTTP status:   {error.http_status or '-'}",
            f"Request id:    {error.request_id or '-'}",
            f"Retryable:     {'yes' if error.should_retry else 'no'}",
        ]
    fields = {
        "event_id": update.event_id,
        "seq": update.seq,
        "from_status": update.from_status,
        "to_status": update.to_status,
        "occurred_at": update.occurred_at.isoformat(),
        "psp": update.psp,
        "psp_object_id": update.psp_object_id,
        "settlement_date": update.settlement_date,
        "reason": update.reason,
    }
    lines.append("Update:        " + json.dumps(fields, sort_keys=True))
    return "\n".join(lines)


def build_message(settings: SmtpSettings, failures: Sequence[UpdateResult]) -> EmailMessage:
    """The alert e-mail for ``failures`` (at least one)."""
    if not failures:
        raise ValueError("no failures to report")
    message = EmailMessage()
    count = len(failures)
    first = failures[0]
    target = first.record_id or first.update.aggregate_id
    subject = f"Salesforce write-back failed for {target}"
    if count > 1:
        subject = f"Salesforce write-back failed for {count} records"
    message["Subject"] = f"{settings.subject_prefix} {subject}"
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="paybus")
    intro = (
        f"Salesforce did not store {count} payment status update(s). The CRM shows an older "
        "status for these records until someone fixes the cause and the update is replayed "
        "(paybus dlq replay).\n"
    )
    body = "\n\n".join(describe_failure(f) for f in failures)
    message.set_content(f"{intro}\n{body}\n")
    return message


class FailureAlerter:
    """Sends alert e-mails through SMTP."""

    def __init__(self, settings: SmtpSettings) -> None:
        if not settings.recipients:
            raise ValueError("alerts need at least one recipient")
        if (settings.username or settings.password) and not settings.starttls:
            # smtplib logs in whenever the relay offers AUTH, TLS or not.
            raise ValueError("an SMTP login needs STARTTLS: the password would go in clear text")
        self.settings = settings

    def alertable(self, results: Sequence[UpdateResult]) -> list[UpdateResult]:
        """Results a person must look at: permanent failures and records not found."""
        return [
            r
            for r in results
            if r.outcome is Outcome.NOT_FOUND
            or (r.outcome is Outcome.FAILED and not r.should_retry)
        ]

    def send(self, failures: Sequence[UpdateResult]) -> bool:
        """E-mail the failures that need a person; False when there were none.

        Raises :class:`TransientError` when the relay cannot be reached or refuses the mail,
        so the caller can retry it like any other transient failure.
        """
        wanted = self.alertable(failures)
        if not wanted:
            return False
        message = build_message(self.settings, wanted)
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as smtp:
                if s.starttls:
                    # A verifying context: smtplib's default one accepts any certificate, so
                    # the login below could go to whoever sits between the bus and the relay.
                    smtp.starttls(context=ssl.create_default_context(cafile=s.ca_bundle))
                if s.username and s.password:
                    smtp.login(s.username, s.password)
                smtp.send_message(message, from_addr=s.sender, to_addrs=list(s.recipients))
        except (smtplib.SMTPException, OSError) as err:
            raise TransientError(f"alert e-mail not sent: {err}", psp="smtp") from err
        return True
