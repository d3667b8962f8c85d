"""Expired payment pages: which payments are due, the cancel intent and where its reason goes.

Pure logic (streams/page_expiry.py, page_links.link_expiry, the router's route()), and the
janitor's tracking and timer driven with a list for the topic (no broker).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams import metrics, page_expiry
from streams.agents.commands import Shared
from streams.agents.ops import OpsStage
from streams.codec import AvroCodec
from streams.intents import check_intent, command_id, route
from streams.page_links import PAGE_URL_ATTRIBUTE, link_expiry, link_for
from streams.records import PaymentEvent, StatusUpdate
from streams.settings import Settings

ISSUED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL_S = 600
EXPIRES = int(ISSUED.timestamp()) + TTL_S
GRACE = timedelta(minutes=5)
AGAIN = timedelta(days=1)
LINK = link_for("https://pay.example.com", "secret", "stripe", "pi_1", ISSUED, TTL_S)


def _entry(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "payment",
        "status": "pending_customer_approval",
        "psp": "stripe",
        "psp_object_id": "pi_1",
        "crm_record_id": "a01000000000001AAA",
        page_expiry.EXPIRES_KEY: EXPIRES,
    }
    return {**entry, **over}


def _at(seconds_after_expiry: float) -> datetime:
    return datetime.fromtimestamp(EXPIRES, UTC) + timedelta(seconds=seconds_after_expiry)


def test_the_expiry_is_read_off_the_link_the_customer_holds() -> None:
    assert link_expiry(LINK) == EXPIRES
    assert page_expiry.expires_of({PAGE_URL_ATTRIBUTE: LINK, "method": "card"}) == EXPIRES
    assert page_expiry.expires_of({"method": "card"}) is None
    assert page_expiry.expires_of(None) is None


@pytest.mark.parametrize(
    "link",
    [
        "https://pay.example.com/pay/stripe/pi_1?sig=ab",  # none
        "https://pay.example.com/pay/stripe/pi_1?exp=soon&sig=ab",
        "https://pay.example.com/pay/stripe/pi_1?exp=%C2%B2&sig=ab",  # a digit, not ASCII
        "https://pay.example.com/pay/stripe/pi_1?exp=" + "9" * 13 + "&sig=ab",  # too long
        "https://pay.example.com/pay/stripe/pi_1?exp=1&exp=2&sig=ab",  # which one?
        "not a link",
    ],
)
def test_a_link_naming_no_usable_expiry_gives_none(link: str) -> None:
    assert link_expiry(link) is None


def test_due_only_after_expiry_and_grace_while_the_customer_is_awaited() -> None:
    entry = _entry()
    assert not page_expiry.is_due(entry, _at(-1), GRACE)  # the link still opens
    assert not page_expiry.is_due(entry, _at(299), GRACE)  # within the grace
    assert page_expiry.is_due(entry, _at(300), GRACE)
    assert page_expiry.is_due(entry, _at(86400), GRACE)
    assert page_expiry.is_due(entry, _at(0), timedelta(0))


@pytest.mark.parametrize(
    "over",
    [
        {"status": "confirmed"},  # paid before it expired
        {"status": "pending_submission"},  # being paid: Stripe's processing
        {"status": "cancelled"},
        {"status": "failed"},
        {"type": "mandate"},
        {page_expiry.EXPIRES_KEY: None},  # not a page's payment (or tracked before expiries)
        {page_expiry.EXPIRES_KEY: True},
        {page_expiry.EXPIRES_KEY: "1772366400"},
    ],
)
def test_never_due_unless_a_page_payment_still_waits(over: dict[str, Any]) -> None:
    assert not page_expiry.is_due(_entry(**over), _at(86400), GRACE)


def test_a_due_payment_is_asked_for_once_and_again_only_a_janitor_period_later() -> None:
    now = _at(600)
    assert page_expiry.decide(_entry(), now, GRACE, None, AGAIN) == page_expiry.REQUESTED
    asked = now - timedelta(hours=1)
    assert page_expiry.decide(_entry(), now, GRACE, asked, AGAIN) is None
    asked = now - AGAIN
    assert page_expiry.decide(_entry(), now, GRACE, asked, AGAIN) == page_expiry.REQUESTED_AGAIN
    assert page_expiry.decide(_entry(status="confirmed"), now, GRACE, None, AGAIN) is None


def test_the_intent_is_a_function_of_the_payment_and_the_links_expiry() -> None:
    change = page_expiry.cancel_intent("pay-1", _entry())
    again = page_expiry.cancel_intent("pay-1", _entry(status="pending_customer_approval"))
    assert change.asdict() == again.asdict()  # a re-run after a crash is a duplicate
    assert change.change_id == f"page-expiry:pay-1:{EXPIRES}"
    assert page_expiry.cancel_intent("pay-2", _entry()).change_id != change.change_id
    later = page_expiry.cancel_intent("pay-1", _entry(page_expires=EXPIRES + 1))
    assert later.change_id != change.change_id  # another link, another request
    assert change.intent == "cancel" and change.aggregate_type == "payment"
    assert change.source == "page-expiry" and change.gateway is None
    assert change.occurred_at == datetime.fromtimestamp(EXPIRES, UTC)
    assert change.crm_record_id == "a01000000000001AAA"
    assert change.reason == "payment page link expired at 2026-03-01T12:10:00Z"
    check_intent(change.asdict())  # a valid intent: no card number, a known intent


def test_the_router_sends_it_where_the_payment_went_with_its_reason() -> None:
    change = page_expiry.cancel_intent("pay-1", _entry()).asdict()
    settings = Settings()
    routed = [
        route(change, known_gateway="stripe", gateways=settings.gateways,
              rules=settings.routing_rules, now=ISSUED + timedelta(hours=h))
        for h in (1, 2)
    ]  # fmt: skip
    command = routed[0].command
    assert routed[0].gateway.connector == "stripe" and command["psp"] == "stripe"
    assert command["operation"] == "cancel" and command["aggregate_id"] == "pay-1"
    assert command["reason"] == "payment page link expired at 2026-03-01T12:10:00Z"
    # Routed again (republished, or after a crash): the same command id, so the same PSP
    # idempotency key, whenever it is routed.
    assert command["command_id"] == routed[1].command["command_id"]
    assert command["command_id"] == command_id(f"page-expiry:pay-1:{EXPIRES}", "cancel")


def test_the_reason_survives_the_wire() -> None:
    codec = AvroCodec()
    change = page_expiry.cancel_intent("pay-1", _entry())
    decoded = codec.decode(codec.encode("CrmChange", change.asdict()), "CrmChange")
    assert decoded["reason"] == change.reason
    # An intent written before the field existed (with the earlier writer schemas, not the
    # current one): tests/unit/streams/test_schema_check.py.


def _event(status: str, reason: str | None = None) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"cmd:{status}", aggregate_id="pay-1", aggregate_type="payment",
        status=status, occurred_at=ISSUED, source="stripe", reason=reason, attributes={},
    )  # fmt: skip


def test_a_cancels_reason_goes_on_its_cancelled_event_only() -> None:
    events = Shared._with_reason("payment page link expired", [_event("cancelled")])
    assert [e.reason for e in events] == ["payment page link expired"]
    # Stripe refused (the customer paid meanwhile): the payment's own status, no reason.
    assert Shared._with_reason("expired", [_event("confirmed")])[0].reason is None
    assert Shared._with_reason("expired", [_event("cancelled", "duplicate")])[0].reason == (
        "duplicate"
    )
    # Whatever a CRM sent as the reason, no card number reaches Kafka or the CRM.
    (masked,) = Shared._with_reason("card 4242 4242 4242 4242 expired", [_event("cancelled")])
    assert masked.reason is not None and "4242 4242 4242 4242" not in masked.reason


# --- the janitor's tracking and timer, the topic a list --------------------------------------


class _Sent:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[str, Any]] = []
        self.fail = fail

    async def send(self, key: str, value: Any) -> Any:
        if self.fail:
            raise ConnectionError("broker away")
        self.records.append((key, value))

        async def delivered() -> None:
            return None

        return delivered()


class _Msg:
    def __init__(self, value: StatusUpdate) -> None:
        self.value = value


def _janitor(topic: _Sent) -> OpsStage:
    stage = OpsStage.__new__(OpsStage)
    stage.latest = {}
    stage.expiry_requested = {}
    stage.page_grace = GRACE
    stage.stuck_after = AGAIN
    stage.changes_topic = topic  # type: ignore[assignment]
    return stage


def _update(seq: int, status: str, **kw: Any) -> _Msg:
    return _Msg(
        StatusUpdate(
            event_id=f"e{seq}", aggregate_id="pay-1", aggregate_type="payment",
            to_status=status, occurred_at=ISSUED, seq=seq, source="stripe", psp="stripe",
            psp_object_id="pi_1", **kw,
        )
    )  # fmt: skip


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, datetime]:
    """The janitor's clock, set by the test."""
    now = {"now": _at(0)}

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return now["now"]

    monkeypatch.setattr("streams.agents.ops.datetime", _Clock)
    return now


def _count(outcome: str) -> float:
    return metrics.PAGE_EXPIRY.labels(outcome)._value.get()


async def test_the_janitor_keeps_the_expiry_and_cancels_once_then_counts_the_outcome(
    clock: dict[str, datetime],
) -> None:
    sent = _Sent()
    stage = _janitor(sent)
    stage.remember(_update(1, "created", crm_record_id="a01000000000001AAA"))  # type: ignore[arg-type]
    stage.remember(_update(2, "pending_customer_approval", attributes={PAGE_URL_ATTRIBUTE: LINK}))  # type: ignore[arg-type]
    assert stage.latest["pay-1"][page_expiry.EXPIRES_KEY] == EXPIRES
    assert stage.latest["pay-1"]["crm_record_id"] == "a01000000000001AAA"

    clock["now"] = _at(10)
    before = {o: _count(o) for o in ("requested", "cancelled", "overtaken")}
    await stage.expire_pages()  # within the grace
    assert sent.records == []
    clock["now"] = _at(301)
    await stage.expire_pages()
    await stage.expire_pages()  # asked already: not again
    ((key, change),) = sent.records
    assert key == "pay-1" and change.change_id == f"page-expiry:pay-1:{EXPIRES}"
    assert change.crm_record_id == "a01000000000001AAA"
    assert _count("requested") == before["requested"] + 1

    stage.remember(_update(3, "cancelled"))  # type: ignore[arg-type]
    assert _count("cancelled") == before["cancelled"] + 1
    assert stage.latest["pay-1"][page_expiry.EXPIRES_KEY] == EXPIRES  # kept, no link on it
    await stage.expire_pages()
    assert len(sent.records) == 1  # cancelled: nothing due
    assert _count("overtaken") == before["overtaken"]


async def test_a_cancel_that_could_not_be_published_is_tried_at_the_next_check(
    clock: dict[str, datetime],
) -> None:
    sent = _Sent(fail=True)
    stage = _janitor(sent)
    stage.latest["pay-1"] = _entry()
    stage.latest["pay-2"] = _entry(status="confirmed")  # paid in time: never cancelled
    failed = _count("failed")
    clock["now"] = _at(3600)
    await stage.expire_pages()
    assert _count("failed") == failed + 1 and stage.expiry_requested == {}
    sent.fail = False
    await stage.expire_pages()
    assert [k for k, _ in sent.records] == ["pay-1"]


async def test_a_partition_moved_to_another_worker_is_forgotten_here(
    tmp_path: Any, clock: dict[str, datetime]
) -> None:
    """The real Faust table (memory store, the default): a key this worker wrote stayed in
    its store after its partition was revoked, frozen as it was, so this worker went on
    cancelling a page the new owner saw paid (every janitor period, the refusal written to
    the paid record)."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.agents.common import json_table
    from streams.app import build_app

    app = build_app(Settings(data_dir=tmp_path))
    stage = _janitor(_Sent())
    stage.latest = table = json_table(app, "janitor-status")
    table.partition_for_key = lambda key: 3  # type: ignore[method-assign]
    table.send_changelog = lambda *a, **k: SimpleNamespace(  # type: ignore[method-assign]
        message=SimpleNamespace(partition=3)
    )
    update = _update(2, "pending_customer_approval", attributes={PAGE_URL_ATTRIBUTE: LINK})
    update.message = SimpleNamespace(partition=3)  # type: ignore[attr-defined]
    stage.remember(update)  # type: ignore[arg-type]
    assert "pay-1" in dict(table.items())
    # A rebalance gives partition 3 to another worker; this one keeps partition 0.
    await table.data.on_recovery_completed({TP("paybus-janitor-status-changelog", 0)}, set())
    assert dict(table.items()) == {}
    clock["now"] = _at(3600)
    await stage.expire_pages()
    assert stage.changes_topic.records == []  # type: ignore[attr-defined]
