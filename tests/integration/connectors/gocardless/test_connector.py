"""GoCardless-specific connector behaviour beyond the shared contract: batched webhooks,
backfill of dropped webhooks, crash re-delivery, and bank details that never leak."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gocardless_pro
import pytest

from connectors.errors import WebhookVerificationError
from connectors.gocardless import GoCardlessConnector
from connectors.gocardless.bank_details import BankDetailsError, register_bank_account
from connectors.gocardless.client import GoCardlessApi
from connectors.gocardless.sandbox import RunningSandbox, start_sandbox
from streams.lifecycles import is_legal
from streams.records import PaymentEvent

from .conftest import SECRET, TOKEN
from .harness import (
    FaultProxy,
    GoCardlessHarness,
    make_connector,
    proxy_for,
    settings_for,
    sign,
)

#: What each GoCardless event of the test world must become (written out independently of
#: the connector's table, as the issue states the lifecycles).
EXPECTED = {
    ("mandates", "created"): "pending_submission",
    ("mandates", "submitted"): "submitted",
    ("mandates", "active"): "active",
    ("payments", "created"): "pending_submission",
    ("payments", "submitted"): "submitted",
    ("payments", "confirmed"): "confirmed",
    ("payments", "paid_out"): "paid_out",
    ("payments", "failed"): "failed",
    ("payments", "cancelled"): "cancelled",
    ("refunds", "created"): "created",
    ("refunds", "paid"): "refunded",
}
LINK = {"payments": "payment", "mandates": "mandate", "refunds": "refund"}
IBAN = "GB82WEST12345698765432"
ACCOUNT_NUMBER = "55779911"


@pytest.fixture
def proxy(sandbox: RunningSandbox) -> Iterator[FaultProxy]:
    yield from proxy_for(sandbox)


@pytest.fixture
def harness(sandbox: RunningSandbox, proxy: FaultProxy) -> GoCardlessHarness:
    return GoCardlessHarness(sandbox, proxy)


@dataclass
class World:
    """Aggregates created through the connector: GoCardless id -> paybus aggregate id."""

    aggregates: dict[str, str] = field(default_factory=dict)


def build_world(harness: GoCardlessHarness) -> World:
    """A mandate, 12 debits (10 paid out, one failing, one cancelled), two refunds: 53
    events, all of them created through the connector so they carry paybus metadata."""
    connector = harness.new_connector()
    world = World()
    world.aggregates[harness.mandate_id] = "man-world"  # the harness's own mandate
    payments = []
    for i in range(12):
        metadata = {"sandbox_outcome": "failed"} if i == 10 else None
        command = harness.payment_command(amount_minor=1000 + i, metadata=metadata)
        result = connector.execute(command)
        assert result.psp_object_id
        world.aggregates.update(result.links)
        payments.append((command, result.psp_object_id))
    cancel = harness.command(
        "cancel", aggregate_id=payments[11][0].aggregate_id, psp_object_id=payments[11][1]
    )
    connector.execute(cancel)
    harness.sandbox.advance(steps=3)
    for command, psp_id in payments[:2]:
        refund = harness.command(
            "refund", psp_object_id=psp_id, payment_id=command.aggregate_id, currency="GBP"
        )
        world.aggregates.update(connector.execute(refund).links)
    harness.sandbox.advance(steps=2)
    return world


def _world_aggregate(harness: GoCardlessHarness, world: World, gc_id: str) -> str:
    if gc_id == harness.mandate_id:
        # the harness's mandate was created with its own aggregate id: read it back
        return str(harness.client.mandates.get(gc_id).metadata["paybus_aggregate_id"])
    return world.aggregates[gc_id]


def test_batch_of_50_shuffled_events_is_verified_and_normalised(
    harness: GoCardlessHarness,
) -> None:
    world = build_world(harness)
    history = [e.attributes for e in harness.client.events.all()][::-1]  # oldest first
    assert len(history) >= 50
    harness.sandbox.configure_webhooks(batch_size=50, shuffle=True, seed=11)
    batches = harness.sandbox.deliver_webhooks()["batches"]
    by_id = {e["id"]: e for e in history}
    ids = batches[0]["event_ids"]
    assert len(ids) == 50
    assert ids != sorted(ids, key=lambda i: by_id[i]["created_at"])  # really out of order

    # The 50-event batch, and the rest of the world's events in the next one.
    connector = harness.new_connector()
    units = []
    for batch in batches:
        headers = {"webhook-signature": batch["signature"]}
        verified = connector.verify_webhook(batch["body"].encode(), headers)
        assert [u.webhook_id for u in verified] == batch["event_ids"]
        units.extend(verified)
    assert sorted(u.webhook_id for u in units) == sorted(by_id)
    paid_out: dict[str, PaymentEvent] = {}
    per_aggregate: dict[str, list[PaymentEvent]] = defaultdict(list)
    for unit in units:
        gc = by_id[unit.webhook_id]
        if gc["resource_type"] == "payouts":
            assert unit.psp_object_id == gc["links"]["payout"]
            payout = harness.client.payouts.get(gc["links"]["payout"]).attributes
            events = connector.normalise(unit.body)
            assert events and all(e.settlement_date == payout["arrival_date"] for e in events)
            assert {e.event_id for e in events} == {f"{gc['id']}:{e.psp_object_id}" for e in events}
            for event in events:
                paid_out[event.psp_object_id or ""] = event
            continue
        gc_id = gc["links"][LINK[gc["resource_type"]]]
        assert unit.psp_object_id == gc_id
        [event] = connector.normalise(unit.body)
        assert event.event_id == gc["id"]
        assert event.status == EXPECTED[(gc["resource_type"], gc["action"])]
        assert event.aggregate_id == _world_aggregate(harness, world, gc_id)
        assert event.psp_object_id == gc_id and event.psp == "gocardless"
        assert event.occurred_at == datetime.fromisoformat(gc["created_at"].replace("Z", "+00:00"))
        if event.aggregate_type == "payment":
            assert event.method == "direct_debit"
        if event.status == "paid_out":
            payout = harness.client.payouts.get(gc["links"]["payout"]).attributes
            assert event.settlement_date == payout["arrival_date"]
        if event.status == "failed":
            assert event.reason == "insufficient_funds"
        per_aggregate[event.aggregate_id].append(event)
    # Restored to time order, every aggregate's events are a legal history.
    for events in per_aggregate.values():
        events.sort(key=lambda e: e.occurred_at)
        current = None
        for event in events:
            assert current is None or is_legal(
                event.aggregate_type, event.method, current, event.status
            ), [e.status for e in events]
            current = event.status
    for psp_id, event in paid_out.items():
        assert event.aggregate_id == world.aggregates[psp_id]


def test_forged_or_reordered_batch_is_refused(harness: GoCardlessHarness) -> None:
    harness.new_connector().execute(harness.payment_command())
    harness.sandbox.advance(steps=2)
    batch = harness.sandbox.deliver_webhooks()["batches"][0]
    body = batch["body"].encode()
    connector = harness.new_connector()
    assert connector.verify_webhook(body, {"Webhook-Signature": batch["signature"]})
    with pytest.raises(WebhookVerificationError):
        connector.verify_webhook(body, sign(body, secret="forged-secret"))
    reordered = json.loads(body)
    reordered["events"].reverse()
    with pytest.raises(WebhookVerificationError):
        connector.verify_webhook(
            json.dumps(reordered).encode(), {"Webhook-Signature": batch["signature"]}
        )
    with pytest.raises(WebhookVerificationError):
        connector.verify_webhook(body, {"Webhook-Signature": "é" * 64})


def _source(event: PaymentEvent) -> str:
    """The GoCardless event an event came from (payout events are ``<EV>:<PM>``)."""
    return event.event_id.split(":")[0]


def test_backfill_recovers_exactly_the_dropped_webhooks(harness: GoCardlessHarness) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    build_world(harness)
    harness.sandbox.configure_webhooks(batch_size=10, shuffle=True, drop_rate=0.2, seed=3)
    report = harness.sandbox.deliver_webhooks()
    dropped = set(report["dropped"])
    connector = harness.new_connector()
    delivered: dict[str, dict[str, Any]] = {}
    for batch in report["batches"]:
        body = batch["body"].encode()
        for unit in connector.verify_webhook(body, {"Webhook-Signature": batch["signature"]}):
            for event in connector.normalise(unit.body):
                delivered[event.event_id] = event.asdict()
    delivered_sources = {_source(PaymentEvent(**e)) for e in delivered.values()}
    total = sum(1 for _ in harness.client.events.all())
    assert 0.1 * total < len(dropped) < 0.35 * total
    assert not dropped & delivered_sources

    # a restarted worker, paging 7 events at a time so the cursor is followed
    fresh = GoCardlessConnector(
        harness.settings,
        api=GoCardlessApi(harness.settings.gocardless, page_size=7),
        sleep=lambda _s: None,
    )
    backfilled = list(fresh.backfill(since))
    times = [(e.occurred_at, _source(e)) for e in backfilled]
    assert times == sorted(times)
    recovered = [e.asdict() for e in backfilled if _source(e) not in delivered_sources]
    expected = [
        e.asdict()
        for event_id in sorted(dropped)
        for e in connector.normalise(
            json.dumps({"events": [harness.client.events.get(event_id).attributes]}).encode()
        )
    ]
    key = lambda e: e["event_id"]  # noqa: E731
    assert sorted(recovered, key=key) == sorted(expected, key=key)
    assert {e["event_id"].split(":")[0] for e in recovered} == dropped
    # what was delivered already comes back identical, for the sequencer to drop by id
    again = {e.event_id: e.asdict() for e in backfilled if _source(e) in delivered_sources}
    assert again == delivered


def test_command_redelivered_after_a_crash_creates_one_payment(
    harness: GoCardlessHarness, proxy: FaultProxy
) -> None:
    command = harness.payment_command()
    before = harness.count_payments()
    # The create reaches GoCardless but its answer is lost: the worker's in-process retry
    # repeats it with the same idempotency key and gets the payment the first one made...
    proxy.fail_next(503, after_forward=True)
    first = harness.new_connector().execute(command)
    assert [p for m, p in proxy.forwarded if m == "POST"].count("/payments") == 2
    # ...and then the worker dies before committing; a new one runs the same command.
    again = harness.new_connector().execute(command)
    assert harness.count_payments() == before + 1
    assert first.psp_object_id == again.psp_object_id
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    assert [e.event_id[:2] for e in first.events] == ["EV"]  # GoCardless's own event
    payment = harness.client.payments.get(first.psp_object_id)
    assert payment.metadata["paybus_aggregate_id"] == command.aggregate_id
    assert (payment.amount, payment.currency) == (1500, "GBP")


def test_a_cancel_refused_for_another_reason_answers_the_status_with_gocardless_words(
    harness: GoCardlessHarness, proxy: FaultProxy
) -> None:
    """Not ``cancellation_failed`` (this code knows that one): any other refusal of a request
    GoCardless understood. Raised, it became the payment's ``failed`` while the debit went on."""
    created = harness.new_connector().execute(harness.payment_command())
    assert created.psp_object_id
    cancel = harness.command("cancel", psp_object_id=created.psp_object_id)
    proxy.fail_next(422)  # the cancel, refused with a reason the connector has no case for

    answer = harness.new_connector().execute(cancel)

    [event] = answer.events
    assert (event.status, answer.psp_object_id) == ("pending_submission", created.psp_object_id)
    assert event.reason and event.reason.startswith("gocardless refused the cancel: ")
    assert "injected HTTP 422" in event.reason
    assert harness.client.payments.get(created.psp_object_id).status == "pending_submission"
    # Nothing was cancelled and nothing failed: asked again, GoCardless cancels it.
    again = harness.new_connector().execute(cancel)
    assert [e.status for e in again.events] == ["cancelled"]


def test_a_cancel_paybus_made_answers_without_gocardless_cause_another_keeps_it(
    harness: GoCardlessHarness,
) -> None:
    """GoCardless answers a cancel with its own ``cancelled`` event, whose cause for an API
    cancel only says it was cancelled: left on, it kept the command stage from putting the
    intent's reason there, so the CRM never showed it. An event another request caused (here
    an earlier cancel, met by a second one) keeps GoCardless's words."""
    created = harness.new_connector().execute(harness.payment_command())
    assert created.psp_object_id
    cancel = harness.command("cancel", psp_object_id=created.psp_object_id)

    answer = harness.new_connector().execute(cancel)
    again = harness.new_connector().execute(cancel)  # re-delivered after a crash
    other = harness.new_connector().execute(
        harness.command("cancel", psp_object_id=created.psp_object_id)
    )

    [mine] = answer.events
    assert (mine.status, mine.reason, mine.event_id[:2]) == ("cancelled", None, "EV")
    assert [(e.event_id, e.reason) for e in again.events] == [(mine.event_id, None)]
    [theirs] = other.events
    assert (theirs.event_id, theirs.status) == (mine.event_id, "cancelled")
    assert theirs.reason  # GoCardless's description of an API cancel


def test_a_refusal_quoting_an_account_number_reaches_no_event(
    harness: GoCardlessHarness, proxy: FaultProxy
) -> None:
    """GoCardless's words go to Kafka and the CRM: redacted where the connector writes them."""
    created = harness.new_connector().execute(harness.payment_command())
    assert created.psp_object_id
    cancel = harness.command("cancel", psp_object_id=created.psp_object_id)
    proxy.fail_next(422, message=f"account {IBAN} is not accepted")

    [event] = harness.new_connector().execute(cancel).events

    assert event.reason and event.reason.startswith("gocardless refused the cancel: account ")
    assert not _leaks(IBAN, json.dumps(event.asdict(), default=str).encode())


def test_redelivered_refund_makes_one_refund(harness: GoCardlessHarness) -> None:
    connector = harness.new_connector()
    payment = harness.payment_command()
    created = connector.execute(payment)
    assert created.psp_object_id
    harness.advance_to(created.psp_object_id, "confirmed")
    refund = harness.command(
        "refund", psp_object_id=created.psp_object_id, payment_id=payment.aggregate_id
    )
    first = harness.new_connector().execute(refund)
    again = harness.new_connector().execute(refund)
    assert first.psp_object_id == again.psp_object_id
    refunds = list(harness.client.refunds.all(params={"payment": created.psp_object_id}))
    assert [r.id for r in refunds] == [first.psp_object_id]
    assert refunds[0].amount == 1500  # no amount: the whole payment


# --- bank details ---------------------------------------------------------------------------


@pytest.fixture
def file_sandbox(tmp_path: Path) -> Iterator[tuple[RunningSandbox, Path]]:
    running = start_sandbox(token=TOKEN, webhook_secret=SECRET, db_path=str(tmp_path / "gc.db"))
    yield running, tmp_path
    running.stop()


def _leaks(number: str, blob: bytes) -> bool:
    spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return any(form.encode() in blob for form in (number, spaced, number.lower()))


def test_bank_details_go_to_gocardless_and_only_token_and_mask_come_back(
    file_sandbox: tuple[RunningSandbox, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, directory = file_sandbox
    proxy = FaultProxy(sandbox.base_url)
    try:
        api = make_connector(settings_for(proxy.base_url)).api
        with caplog.at_level(logging.DEBUG):
            by_iban = register_bank_account(
                api, account_holder_name="Ada Lovelace", iban="GB82 WEST 1234 5698 7654 32"
            )
            by_sort_code = register_bank_account(
                api,
                account_holder_name="Charles Babbage of the Analytical Engine",
                sort_code="20-00-00",
                account_number=ACCOUNT_NUMBER,
                customer={"email": "charles@example.com"},
            )
        assert ("POST", "/bank_details_lookups") in proxy.forwarded
    finally:
        proxy.stop()
    assert by_iban.token.startswith("BA") and by_iban.masked == "****5432"
    assert by_sort_code.token.startswith("BA") and by_sort_code.masked == "****9911"
    client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
    account = client.customer_bank_accounts.get(by_sort_code.token)
    assert account.account_holder_name == "Charles Babbage of"  # cut to Bacs's 18
    assert client.customers.get(account.links.customer).email == "charles@example.com"
    returned = repr(by_iban).encode() + repr(by_sort_code).encode()
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    sandbox.stop()  # closes the database, so everything it stored is in the files
    stored = b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())
    assert b"Ada Lovelace" in stored  # the files really hold what the sandbox stored
    for number in (IBAN, ACCOUNT_NUMBER):
        for blob in (returned, logged, stored):
            assert not _leaks(number, blob)


def test_invalid_iban_is_refused_before_anything_is_sent(
    harness: GoCardlessHarness, proxy: FaultProxy
) -> None:
    proxy.forwarded.clear()
    bad = "GB82WEST12345698765433"  # checksum off by one digit
    with pytest.raises(BankDetailsError) as info:
        register_bank_account(
            make_connector(harness.settings).api,
            account_holder_name="Ada Lovelace",
            iban=bad,
        )
    assert bad not in str(info.value) and info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert info.value.should_retry is False
    assert proxy.forwarded == []
