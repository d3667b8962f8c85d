"""Production workers refuse the secrets that anyone who has read this repository knows.

The settings ship working defaults for every secret so that ``make run`` and the tests need no
configuration. Those defaults are public, and the ones that *authenticate inbound requests*
are the keys to the bus: with the default Stripe or GoCardless webhook secret anyone can forge
a PSP webhook (a payment ``confirmed`` that never was), with the default CRM ingest secret
anyone can publish payment and refund intents, with the default operator token anyone can
register bank accounts under the operator's GoCardless account. A production deployment that
forgets one variable (``deploy/k8s/secret.yaml`` once named neither the ingest secret nor the
token) would run with them, silently. So a production-profile worker refuses to start with
one of them still at its default, empty (an HMAC under an empty key is computable by anyone),
or a ``replace_me`` placeholder from the deploy files: exit 2, naming the variable.

Only the secrets guarding endpoints the worker's roles serve are checked: a ``web`` role
serves the webhooks of the configured PSPs and ``POST /bank-details``; a ``crm`` role serves
``POST /events/crm``. Outbound credentials are not: a wrong one fails loudly at the PSP.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import BaseModel, SecretStr

from streams.settings import (
    CrmSettings,
    GoCardlessSettings,
    OpsSettings,
    PagesSettings,
    Settings,
    StripeSettings,
)

__all__ = ["PLACEHOLDER", "insecure_secrets", "key_fingerprint", "placeholder_psp_keys"]

#: What the deploy files' placeholders contain.
PLACEHOLDER = "replace_me"


def _default(section: type[BaseModel], field: str) -> str:
    value = section.model_fields[field].default
    assert isinstance(value, SecretStr)
    return value.get_secret_value()


def _inbound(settings: Settings, roles: Iterable[str]) -> list[tuple[str, SecretStr, str]]:
    """(variable, value, built-in default) of each inbound secret the roles depend on."""
    wanted = set(roles)
    psps = {g.connector for g in settings.gateways}
    web = "web" in wanted
    candidates: list[tuple[bool, str, SecretStr, type[BaseModel], str]] = [
        (web, "PAYBUS_OPS__API_TOKEN", settings.ops.api_token, OpsSettings, "api_token"),
        (
            web and "stripe" in psps,
            "PAYBUS_STRIPE__WEBHOOK_SECRET",
            settings.stripe.webhook_secret,
            StripeSettings,
            "webhook_secret",
        ),
        (
            web and "gocardless" in psps,
            "PAYBUS_GOCARDLESS__WEBHOOK_SECRET",
            settings.gocardless.webhook_secret,
            GoCardlessSettings,
            "webhook_secret",
        ),
        (
            # pages on: the web role checks page links, the connector workers sign them
            bool(settings.pages.public_url) and (web or "connectors" in wanted),
            "PAYBUS_PAGES__SECRET",
            settings.pages.secret,
            PagesSettings,
            "secret",
        ),
        (
            "crm" in wanted,
            "PAYBUS_CRM__INGEST_SECRET",
            settings.crm.ingest_secret,
            CrmSettings,
            "ingest_secret",
        ),
    ]
    return [
        (variable, value, _default(section, field))
        for served, variable, value, section, field in candidates
        if served
    ]


def insecure_secrets(settings: Settings, roles: Iterable[str]) -> list[str]:
    """What a production worker with ``roles`` must not start with, each naming its variable.

    Empty for the embedded profile, whose defaults are meant to be used.
    """
    if settings.profile != "production":
        return []
    roles = list(roles)
    errors: list[str] = []
    for variable, secret, default in _inbound(settings, roles):
        value = secret.get_secret_value()
        if not value.strip():
            errors.append(f"{variable} is empty: anyone can sign requests with an empty key")
        elif value == default:
            errors.append(f"{variable} is the public built-in default; set a secret of your own")
        elif PLACEHOLDER in value.lower():
            errors.append(f"{variable} is still the deploy files' placeholder; set it")
    key = settings.stripe.publishable_key
    default_key = StripeSettings.model_fields["publishable_key"].default
    if (
        settings.pages.public_url
        and "web" in set(roles)
        and (key == default_key or PLACEHOLDER in key.lower())
    ):
        errors.append(
            "PAYBUS_STRIPE__PUBLISHABLE_KEY is the built-in test key while payment pages are "
            "on; set your account's publishable key"
        )
    return errors


#: Roles that call the PSPs' APIs (commands and their retries; reconcile, janitor and page
#: expiry look-ups; a webhook's normalising look-ups; the web role's ``POST /bank-details``
#: registrations and payment pages' state).
_CALLING_ROLES = {"connectors", "retry", "sequencer", "ops", "normaliser", "web"}


def placeholder_psp_keys(settings: Settings, roles: Iterable[str]) -> list[str]:
    """Warnings for a worker that would call a PSP's own API with the built-in placeholder
    key (no ``BASE_URL`` pointing at an emulator or sandbox): every call is refused, so
    commands wait parked (alert ``PaybusPspCredentialsRefused``). Said at start, since a
    worker started by hand with the defaults otherwise only says it when a payment comes."""
    if not _CALLING_ROLES & set(roles):
        return []
    psps = {g.connector for g in settings.gateways}
    sections: list[tuple[str, str, SecretStr, str | None, str]] = [
        ("stripe", "STRIPE__API_KEY", settings.stripe.api_key, settings.stripe.base_url,
         _default(StripeSettings, "api_key")),
        ("gocardless", "GOCARDLESS__ACCESS_TOKEN", settings.gocardless.access_token,
         settings.gocardless.base_url, _default(GoCardlessSettings, "access_token")),
    ]  # fmt: skip
    return [
        f"PAYBUS_{variable} is the built-in placeholder and PAYBUS_{psp.upper()}__BASE_URL is "
        f"unset: {psp} will refuse every call (its commands wait parked); set your account's "
        "key, or run `paybus dev` for the bus against local emulators"
        for psp, variable, key, base_url, default in sections
        if psp in psps and base_url is None and key.get_secret_value() == default
    ]


#: The settings field holding each PSP section's API credential.
_CREDENTIAL_FIELDS = ("api_key", "access_token")


def key_fingerprint(settings: Settings, psp: str) -> str | None:
    """A short one-way fingerprint of the API key this process holds for ``psp`` (None for a
    PSP without a settings section): enough to tell two keys apart, nothing to recover one
    from (48 bits of a salted SHA-256 of a high-entropy secret). It travels on a parked
    envelope's header so that a worker can tell whether its key is the one refused."""
    section = getattr(settings, psp, None)
    for field in _CREDENTIAL_FIELDS:
        value = getattr(section, field, None)
        if isinstance(value, SecretStr):
            digest = hashlib.sha256(b"paybus-refused-key:" + value.get_secret_value().encode())
            return digest.hexdigest()[:12]
    return None
