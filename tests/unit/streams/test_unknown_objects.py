"""A 404 for an object the PSP created for paybus (another account's key) parks the command for
the key instead of failing the payment; every other 404 stays a refusal. The rule on its own,
then the command stage's executor and parking on fakes (no Faust app)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from streams import parking
from streams.agents.commands import Shared
from streams.records import PaymentCommand, PaymentEvent
from streams.secrets_check import key_fingerprint
from streams.unknown_objects import another_account, for_credentials

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
GONE = NotFoundError(
    "Resource not found: payments/PM0001", psp="gocardless", http_status=404,
    code="resource_not_found",
)  # fmt: skip


def _command(operation: str, aggregate_type: str = "payment", **fields: Any) -> PaymentCommand:
    return PaymentCommand(
        command_id=f"cmd-{operation}", aggregate_id="pay-1", aggregate_type=aggregate_type,
        operation=operation, psp="gocardless", issued_at=NOW, **fields,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (_command("cancel", psp_object_id="PM0001"), GONE),
        (_command("refund", "refund", payment_id="pay-1", psp_object_id="PM0001"), GONE),
        # a mandate paybus created (its id from the objects table), cancelled
        (_command("cancel", "mandate", psp_object_id="MD0001", mandate_ref="MD0001"), GONE),
    ],
)
def test_a_404_for_the_object_the_psp_gave_paybus_is_another_account(
    command: PaymentCommand, error: ConnectorError
) -> None:
    assert another_account(command, error)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        # the mandate the CRM typed for a payment: the request's own fault
        (_command("create_payment", mandate_ref="MD_TYPO"), GONE),
        (_command("create_mandate"), GONE),
        # a mandate cancelled by the CRM's mandate_ref, no object of paybus's named
        (_command("cancel", "mandate", mandate_ref="MD_TYPO"), GONE),
        # nothing named at all (the objects table had nothing either)
        (_command("cancel"), GONE),
        (_command("refund", "refund", payment_id="pay-1"), GONE),
        # a refusal that is no 404
        (_command("cancel", psp_object_id="PM0001"), PermanentError("bad", http_status=422)),
        # worth asking later for its own reasons, not this rule's
        (_command("cancel", psp_object_id="PM0001"), AuthenticationError("no", http_status=401)),
        (_command("refund", psp_object_id="PM0001"), TransientError("503", http_status=503)),
    ],
)
def test_other_404s_and_other_errors_are_not(command: PaymentCommand, error: Exception) -> None:
    assert not another_account(command, error)


def test_what_waits_for_the_key_is_marked_for_credentials() -> None:
    assert for_credentials(AuthenticationError("revoked", http_status=401))
    assert for_credentials(GONE)  # execute returns only the 404s another_account kept
    assert not for_credentials(TransientError("503", http_status=503))
    assert not for_credentials(PermanentError("bad", http_status=422))
    assert not for_credentials(None)


# --- the executor and the parking, on fakes ----------------------------------------------------


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> asyncio.Future[None]:
        self.sent.append(kwargs)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeConnector:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.seen: list[PaymentCommand] = []

    def execute(self, command: PaymentCommand) -> Any:
        self.seen.append(command)
        raise self.error


def _shared(error: Exception, objects: dict[str, str] | None = None) -> Shared:
    shared = Shared.__new__(Shared)
    settings = SimpleNamespace(gocardless=SimpleNamespace(access_token=SecretStr("live-key")))
    shared.app = SimpleNamespace(settings=settings)  # type: ignore[assignment]
    connector = FakeConnector(error)
    shared.connectors = SimpleNamespace(  # type: ignore[assignment]
        get=lambda psp: connector, threads=lambda psp: None
    )
    shared.objects = dict(objects or {})
    shared.parked = {}
    shared.events_topic = FakeTopic()  # type: ignore[assignment]
    shared.retry_topic = FakeTopic()  # type: ignore[assignment]
    return shared


def _failed(shared: Shared) -> list[PaymentEvent]:
    sent = shared.events_topic.sent  # type: ignore[attr-defined]
    return [s["value"] for s in sent if s["value"].status == "failed"]


async def test_a_cancel_of_a_payment_the_psp_does_not_know_is_returned_not_failed() -> None:
    # the cancel names nothing; its PSP id comes from the objects table (paybus made it)
    shared = _shared(GONE, objects={"pay-1": "PM0001"})
    error = await shared.execute("gocardless", object(), _command("cancel"), "connector:gc")
    assert error is GONE
    assert _failed(shared) == []
    (seen,) = shared.connectors.get("gocardless").seen  # type: ignore[attr-defined]
    assert seen.psp_object_id == "PM0001"


async def test_a_refund_of_a_payment_the_psp_does_not_know_is_returned_not_failed() -> None:
    shared = _shared(GONE, objects={"pay-1": "PM0001"})
    refund = _command("refund", "refund", payment_id="pay-1")
    assert await shared.execute("gocardless", object(), refund, "connector:gc") is GONE
    assert _failed(shared) == []


@pytest.mark.parametrize(
    "command",
    [
        _command("create_payment", mandate_ref="MD_TYPO"),
        _command("cancel", "mandate", mandate_ref="MD_TYPO"),
    ],
)
async def test_a_404_for_an_id_the_crm_typed_still_fails(command: PaymentCommand) -> None:
    shared = _shared(GONE)
    assert await shared.execute("gocardless", object(), command, "connector:gc") is None
    (failed,) = _failed(shared)
    assert failed.aggregate_id == "pay-1"
    assert failed.reason is not None and "Resource not found" in failed.reason


class FakeEvent:
    """The command record being parked (weakly referenced as the current event)."""

    def __init__(self) -> None:
        self.message = SimpleNamespace(
            topic="paybus.commands.gocardless", partition=3, offset=41, key=b"payment:pay-1",
            value=b"command bytes",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("cause", "marked"),
    [
        (GONE, True),
        (AuthenticationError("revoked", psp="gocardless", http_status=401), True),
        (TransientError("503", psp="gocardless", http_status=503), False),
    ],
)
async def test_a_command_waiting_for_the_key_is_parked_marked_with_it(
    cause: ConnectorError, marked: bool
) -> None:
    shared = _shared(cause)
    await shared.park(
        FakeEvent(), "payment:pay-1", origin="o", stage=parking.RETRY, attempt=1, due_at=NOW,
        error=str(cause), aggregate_id="pay-1", cause=cause,
    )  # fmt: skip
    (sent,) = shared.retry_topic.sent  # type: ignore[attr-defined]
    fingerprint = key_fingerprint(shared.app.settings, "gocardless")
    expected = {
        parking.PARKED_FOR_HEADER: parking.CREDENTIALS.encode(),
        parking.REFUSED_KEY_HEADER: (fingerprint or "").encode(),
    }
    assert sent["headers"] == (expected if marked else None)
    assert sent["value"].error == str(cause)
