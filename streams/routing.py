"""Routing rules and gateway configuration: which PSP gets a CRM intent. Pure, no I/O.

Rules are data in configuration (``PAYBUS_ROUTING_RULES`` as JSON), tried in order; the first
rule whose conditions all hold names the gateway — "over 1000 only card", "GB payers only
direct debit", as the Asperato seed describes. An explicit gateway on the CRM record wins, as
long as that gateway can take the payment. Gateway configurations are validated at start-up
and by ``paybus gateways check`` with errors that say what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pycountry
from pydantic import BaseModel, ConfigDict, Field

METHODS = ("card", "direct_debit")
#: Currencies each method can be collected in (bank debit schemes are per currency).
METHOD_CURRENCIES: dict[str, frozenset[str] | None] = {
    "card": None,  # any ISO 4217 currency
    "direct_debit": frozenset({"GBP", "EUR", "AUD", "NZD", "CAD", "USD", "SEK", "DKK"}),
}


class RoutingError(ValueError):
    """No gateway can take the intent; the message is shown on the CRM record."""


class GatewayConfig(BaseModel):
    """One configured gateway (a connector plus what it is allowed to take)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    connector: str
    methods: tuple[str, ...] = ("card",)
    currencies: tuple[str, ...] = ("EUR", "GBP", "USD")
    #: Connector options, e.g. ``three_d_secure``, ``remitter_name`` (Stripe bank debits).
    options: dict[str, Any] = Field(default_factory=dict)


class RoutingRule(BaseModel):
    """A rule: conditions (all must hold; empty means any) and the gateway they choose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: str
    methods: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    min_amount_minor: int | None = None
    max_amount_minor: int | None = None

    def matches(self, method: str, currency: str, amount: int, country: str | None) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.currencies and currency not in self.currencies:
            return False
        if self.countries and (country or "").upper() not in self.countries:
            return False
        if self.min_amount_minor is not None and amount < self.min_amount_minor:
            return False
        return self.max_amount_minor is None or amount <= self.max_amount_minor


DEFAULT_GATEWAYS: tuple[GatewayConfig, ...] = (
    GatewayConfig(name="stripe", connector="stripe", methods=("card",),
                  currencies=("EUR", "GBP", "USD", "AUD")),
    GatewayConfig(name="gocardless", connector="gocardless", methods=("direct_debit",),
                  currencies=("GBP", "EUR")),
)  # fmt: skip
DEFAULT_RULES: tuple[RoutingRule, ...] = (
    RoutingRule(gateway="gocardless", methods=("direct_debit",)),
    RoutingRule(gateway="stripe", methods=("card",)),
)


#: ISO 4217 currencies whose minor unit is not 1/100.
MINOR_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def is_currency(code: str) -> bool:
    return len(code) == 3 and code.isupper() and pycountry.currencies.get(alpha_3=code) is not None


def gateway_errors(
    gateways: Sequence[GatewayConfig], rules: Sequence[RoutingRule], installed: Iterable[str]
) -> list[str]:
    """Everything wrong with a gateway/rule configuration, each saying what to change."""
    errors: list[str] = []
    installed = set(installed)
    names = [g.name for g in gateways]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"gateway {dup!r} is configured twice: give each gateway a unique name")
    for gw in gateways:
        where = f"gateway {gw.name!r}"
        if gw.connector not in installed:
            errors.append(
                f"{where}: connector {gw.connector!r} is not installed "
                f"(installed: {', '.join(sorted(installed)) or 'none'})"
            )
        for method in gw.methods:
            if method not in METHODS:
                errors.append(
                    f"{where}: unknown method {method!r}; use one of {', '.join(METHODS)}"
                )
        for cur in gw.currencies:
            if not is_currency(cur):
                errors.append(f"{where}: {cur!r} is not an ISO 4217 currency code")
        for method in (m for m in gw.methods if METHOD_CURRENCIES.get(m)):
            allowed = METHOD_CURRENCIES[method] or frozenset()
            if not allowed.intersection(gw.currencies):
                errors.append(
                    f"{where}: method {method!r} needs at least one of its currencies "
                    f"({', '.join(sorted(allowed))}) in 'currencies'"
                )
        if gw.connector == "stripe" and "direct_debit" in gw.methods:
            # ProntoPayments: a Stripe gateway taking bank debits must have 3-D Secure /
            # remitter name enabled and list AUD (BECS).
            if not (gw.options.get("three_d_secure") or gw.options.get("remitter_name")):
                errors.append(
                    f"{where}: bank debits on Stripe need options.three_d_secure or "
                    "options.remitter_name set to true"
                )
            if "AUD" not in gw.currencies:
                errors.append(f"{where}: bank debits on Stripe need 'AUD' in 'currencies'")
    for i, rule in enumerate(rules, start=1):
        if rule.gateway not in names:
            errors.append(f"routing rule {i}: gateway {rule.gateway!r} is not configured")
        if (
            rule.min_amount_minor is not None
            and rule.max_amount_minor is not None
            and rule.min_amount_minor > rule.max_amount_minor
        ):
            errors.append(f"routing rule {i}: min_amount_minor is above max_amount_minor")
    return errors


def unrouted(gateways: Sequence[GatewayConfig], rules: Sequence[RoutingRule]) -> list[str]:
    """What the configured gateways take but no routing rule can send them: each method and
    currency a gateway lists for which no rule's methods and currencies lead to a gateway that
    takes it (a rule's amount and country bounds are taken as met). Such a payment fails
    ("no routing rule sends ...") unless its record names a gateway; usually the rules were
    replaced (``PAYBUS_ROUTING_RULES``) and one was forgotten. Warnings, not errors: a bus
    whose records always name their gateway needs no rule."""
    by_name = {g.name: g for g in gateways}
    missing: list[str] = []
    for gw in gateways:
        for method in gw.methods:
            allowed = METHOD_CURRENCIES.get(method)
            for currency in gw.currencies:
                if allowed and currency not in allowed:
                    continue  # the gateway check says so already
                reached = any(
                    (not rule.methods or method in rule.methods)
                    and (not rule.currencies or currency in rule.currencies)
                    and (target := by_name.get(rule.gateway)) is not None
                    and method in target.methods
                    and currency in target.currencies
                    for rule in rules
                )
                if not reached:
                    missing.append(
                        f"no routing rule sends {method} payments in {currency} to a gateway "
                        f"that takes them (gateway {gw.name!r} does): they fail unless the "
                        "record names a gateway; add a rule to PAYBUS_ROUTING_RULES"
                    )
    return list(dict.fromkeys(missing))


def choose_gateway(
    *,
    method: str,
    currency: str,
    amount_minor: int,
    country: str | None,
    explicit: str | None,
    gateways: Sequence[GatewayConfig],
    rules: Sequence[RoutingRule],
) -> GatewayConfig:
    """The gateway for an intent, or :class:`RoutingError` saying why none fits."""
    by_name = {g.name: g for g in gateways}

    def accepts(gw: GatewayConfig) -> str | None:
        if method not in gw.methods:
            return f"gateway {gw.name!r} does not take {method}"
        if currency not in gw.currencies:
            return f"gateway {gw.name!r} does not take {currency}"
        return None

    if explicit:
        gw = by_name.get(explicit)
        if gw is None:
            raise RoutingError(f"gateway {explicit!r} named on the record is not configured")
        problem = accepts(gw)
        if problem:
            raise RoutingError(problem)
        return gw
    for rule in rules:
        if rule.matches(method, currency, amount_minor, country):
            gw = by_name[rule.gateway]
            problem = accepts(gw)
            if problem is None:
                return gw
    raise RoutingError(
        f"no routing rule sends a {method} payment of {amount_minor} {currency}"
        + (f" from {country}" if country else "")
        + " to a gateway that takes it"
    )
