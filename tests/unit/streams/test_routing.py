"""Routing rules, gateway validation and CRM intent validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.errors import ValidationError
from streams.intents import IntentError, check_intent, command_id, route
from streams.publisher import check_crm_change
from streams.routing import (
    DEFAULT_GATEWAYS,
    DEFAULT_RULES,
    GatewayConfig,
    RoutingError,
    RoutingRule,
    choose_gateway,
    gateway_errors,
    unrouted,
)

NOW = datetime(2026, 11, 22, tzinfo=UTC)
GATEWAYS = (
    GatewayConfig(name="stripe", connector="stripe", methods=("card",), currencies=("EUR", "GBP")),
    GatewayConfig(
        name="gc", connector="gocardless", methods=("direct_debit",), currencies=("GBP",)
    ),
)
RULES = (
    RoutingRule(gateway="stripe", min_amount_minor=100_001),  # "over 1000 only card"
    RoutingRule(gateway="gc", methods=("direct_debit",), countries=("GB",)),  # GB payers: DD
    RoutingRule(gateway="stripe", methods=("card",)),
)


def _choose(**kw: Any) -> str:
    args = {"country": None, "explicit": None, "gateways": GATEWAYS, "rules": RULES, **kw}
    return choose_gateway(**args).name


def test_rules_are_tried_in_order() -> None:
    assert _choose(method="direct_debit", currency="GBP", amount_minor=5000, country="GB") == "gc"
    assert _choose(method="card", currency="EUR", amount_minor=5000) == "stripe"
    # Over 1000: only card. A big direct debit matches rule 1, whose gateway takes no DD, so
    # the DD rule for GB still applies.
    assert _choose(method="card", currency="GBP", amount_minor=200_000) == "stripe"


def test_no_rule_fits_says_why() -> None:
    with pytest.raises(RoutingError, match="no routing rule sends a direct_debit payment"):
        _choose(method="direct_debit", currency="GBP", amount_minor=5000, country="FR")
    with pytest.raises(RoutingError, match="does not take USD"):
        _choose(method="card", currency="USD", amount_minor=5000, explicit="stripe")
    with pytest.raises(RoutingError, match="not configured"):
        _choose(method="card", currency="EUR", amount_minor=5000, explicit="adyen")


def test_default_configuration_is_valid() -> None:
    assert gateway_errors(DEFAULT_GATEWAYS, DEFAULT_RULES, ["stripe", "gocardless"]) == []
    assert unrouted(DEFAULT_GATEWAYS, DEFAULT_RULES) == []


def test_what_a_gateway_takes_but_no_rule_reaches_is_named() -> None:
    card_only = (RoutingRule(gateway="stripe", methods=("card",)),)
    assert [m.split(" (")[0] for m in unrouted(DEFAULT_GATEWAYS, card_only)] == [
        "no routing rule sends direct_debit payments in GBP to a gateway that takes them",
        "no routing rule sends direct_debit payments in EUR to a gateway that takes them",
    ]
    # a rule for any method reaches the gateways that take what it leads to; one leading to
    # a gateway that does not take the currency reaches nothing
    assert unrouted(DEFAULT_GATEWAYS, (RoutingRule(gateway="gocardless"),
                                        RoutingRule(gateway="stripe"))) == []  # fmt: skip
    aud = unrouted(DEFAULT_GATEWAYS, (RoutingRule(gateway="gocardless", methods=("card",)),
                                      *DEFAULT_RULES))  # fmt: skip
    assert aud == []


def test_gateway_errors_say_what_to_change() -> None:
    bad = (
        GatewayConfig(name="s", connector="stripe", methods=("direct_debit",), currencies=("EUR",)),
        GatewayConfig(name="x", connector="adyen", methods=("cheque",), currencies=("EURO",)),
    )
    errors = gateway_errors(bad, (RoutingRule(gateway="nope"),), ["stripe"])
    text = "\n".join(errors)
    assert "options.three_d_secure or options.remitter_name" in text
    assert "'AUD'" in text
    assert "connector 'adyen' is not installed" in text
    assert "unknown method 'cheque'" in text
    assert "'EURO' is not an ISO 4217 currency code" in text
    assert "routing rule 1: gateway 'nope' is not configured" in text
    good = GatewayConfig(
        name="s", connector="stripe", methods=("direct_debit",), currencies=("AUD",),
        options={"three_d_secure": True},
    )  # fmt: skip
    assert gateway_errors((good,), (), ["stripe"]) == []


CHANGE: dict[str, Any] = {
    "change_id": "chg-1", "aggregate_id": "pay-1", "aggregate_type": "payment",
    "intent": "create_payment", "amount_minor": 2500, "currency": "EUR", "method": "card",
    "payment_method_ref": "pm_1", "customer_ref": "cus_1", "metadata": {},
}  # fmt: skip


def _route(change: dict[str, Any], known: str | None = None) -> Any:
    return route(change, known_gateway=known, gateways=GATEWAYS, rules=RULES, now=NOW)


def test_valid_card_intent_becomes_a_stripe_command() -> None:
    routed = _route(CHANGE)
    assert routed.gateway.name == "stripe"
    cmd = routed.command
    assert cmd["psp"] == "stripe" and cmd["operation"] == "create_payment"
    assert cmd["command_id"] == command_id("chg-1", "create_payment")
    assert _route(CHANGE).command["command_id"] == cmd["command_id"]  # deterministic


INVALID = [
        ({"amount_minor": -5}, "must be positive"),
        ({"amount_minor": 0}, "must be positive"),
        ({"amount_minor": "12"}, "whole number"),
        ({"currency": "EURO"}, "ISO 4217"),
        ({"currency": "eur"}, "ISO 4217"),
        ({"method": "cheque"}, "method must be one of"),
        ({"intent": "teleport"}, "unknown intent"),
        ({"aggregate_type": "mandate"}, "needs aggregate_type payment"),
        ({"payment_method_ref": None}, "saved card token"),
        ({"method": "direct_debit", "currency": "GBP"}, "mandate_ref"),
        ({"intent": "refund", "aggregate_type": "refund"}, "needs payment_id"),
        ({"intent": "create_mandate", "aggregate_type": "mandate", "payment_method_ref": ""},
         "bank account token"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_invalid_intents_are_refused_with_the_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(IntentError, match=message):
        _route({**CHANGE, **change}, known="stripe")


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_publishers_refuse_the_same_intents_without_the_bus_configuration(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(IntentError, match=message):
        check_intent({**CHANGE, **change})
    with pytest.raises(ValidationError, match=message):
        check_crm_change({**CHANGE, **change})


def test_what_depends_on_the_bus_configuration_is_left_to_the_router() -> None:
    for change in (
        {**CHANGE, "intent": "cancel"},  # which gateway took the payment: the router knows
        {**CHANGE, "gateway": "adyen"},  # not configured in this test's bus, maybe in another
        {**CHANGE, "currency": "JPY"},  # no gateway here takes JPY
    ):
        check_intent(change)
        with pytest.raises(IntentError):
            _route(change)


def test_a_payment_page_request_needs_an_amount_a_card_and_pages_served() -> None:
    page = {**CHANGE, "intent": "request_payment", "payment_method_ref": None}
    routed = _route(page)
    assert routed.gateway.name == "stripe" and routed.command["operation"] == "request_payment"
    assert routed.command["amount_minor"] == CHANGE["amount_minor"]
    for bad, message in (({"amount_minor": None}, "amount_minor is required"),
                         ({"method": "direct_debit"}, "payment page takes cards")):  # fmt: skip
        with pytest.raises(IntentError, match=message):
            check_intent({**page, **bad})
    with pytest.raises(IntentError, match="PAYBUS_PAGES__PUBLIC_URL"):
        route(page, known_gateway=None, gateways=GATEWAYS, rules=RULES, now=NOW, pages=False)


def test_refund_and_cancel_follow_the_payment_gateway() -> None:
    refund = {**CHANGE, "intent": "refund", "aggregate_type": "refund", "aggregate_id": "ref-1",
              "payment_id": "pay-1", "amount_minor": 500}  # fmt: skip
    assert _route(refund, known="stripe").command["psp"] == "stripe"
    with pytest.raises(IntentError, match="gateway is unknown"):
        _route({**CHANGE, "intent": "cancel"})
    assert _route({**CHANGE, "intent": "cancel"}, known="gc").command["psp"] == "gocardless"
    with pytest.raises(IntentError, match="needs payment_id"):
        _route({**refund, "payment_id": None}, known="stripe")
