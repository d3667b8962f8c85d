"""Stripe-specific configuration beyond :class:`~streams.settings.StripeSettings`.

The settings model itself lives with the rest of paybus's configuration (one frozen model per
process); this module only names the constants the connector's modules share, so the metadata
keys written at create time and read back from webhooks cannot drift apart.
"""

from __future__ import annotations

from streams.settings import StripeSettings

__all__ = [
    "META_AGGREGATE_ID",
    "META_AGGREGATE_TYPE",
    "META_METHOD",
    "META_PAGE",
    "META_PAYMENT_ID",
    "META_REFUND_ID",
    "PSP",
    "SIGNATURE_HEADER",
    "StripeSettings",
    "api_base",
]

#: The connector's name (entry point, topic suffix, ``PaymentEvent.psp`` and ``source``).
PSP = "stripe"

#: Metadata keys paybus writes on every Stripe object it creates. Stripe echoes metadata on the
#: object in every webhook, so the normaliser can find the aggregate without a lookup table.
META_AGGREGATE_ID = "paybus_aggregate_id"
META_AGGREGATE_TYPE = "paybus_aggregate_type"
META_METHOD = "paybus_method"
META_PAYMENT_ID = "paybus_payment_id"
META_REFUND_ID = "paybus_refund_id"
#: ``"1"`` on a PaymentIntent that waits for its customer on a payment page (streams/pages.py).
META_PAGE = "paybus_page"

#: The header carrying ``t=<unix>,v1=<hex hmac>``.
SIGNATURE_HEADER = "Stripe-Signature"


def api_base(settings: StripeSettings) -> str | None:
    """The API base URL, without a trailing slash (``None``: stripe-python's default)."""
    return settings.base_url.rstrip("/") if settings.base_url else None
