"""GoCardless-specific constants beyond :class:`~streams.settings.GoCardlessSettings`.

The settings model lives with the rest of paybus's configuration; this module names what the
connector's modules share, so the metadata keys written at create time and read back from
events (``resource_metadata``) cannot drift apart.
"""

from __future__ import annotations

from streams.settings import GoCardlessSettings

__all__ = [
    "META_AGGREGATE_ID",
    "META_AGGREGATE_TYPE",
    "META_MAX_KEYS",
    "META_MAX_KEY_LEN",
    "META_MAX_VALUE_LEN",
    "META_PAYMENT_ID",
    "PSP",
    "SIGNATURE_HEADER",
    "GoCardlessSettings",
    "api_base",
]

#: The connector's name (entry point, topic suffix, ``PaymentEvent.psp`` and ``source``).
PSP = "gocardless"

#: Metadata keys paybus writes on mandates, payments and refunds. GoCardless copies a
#: resource's metadata into every event about it (``resource_metadata``), so the normaliser
#: finds the aggregate without its lookup table whenever GoCardless includes it.
META_AGGREGATE_ID = "paybus_aggregate_id"
META_AGGREGATE_TYPE = "paybus_aggregate_type"
#: On refunds: the payment's aggregate id, so a refund event names its payment.
META_PAYMENT_ID = "paybus_payment_id"

#: GoCardless's metadata limits: 3 keys, 50-character keys, 500-character values.
META_MAX_KEYS = 3
META_MAX_KEY_LEN = 50
META_MAX_VALUE_LEN = 500

#: The header carrying the hex HMAC-SHA256 of the raw body.
SIGNATURE_HEADER = "Webhook-Signature"


def api_base(settings: GoCardlessSettings) -> str | None:
    """The API origin without a trailing slash (``None``: the SDK's URL for ``environment``).

    ``gocardless_pro`` joins paths like ``/payments`` onto it with ``urljoin``, so it must be
    a bare origin: a path prefix would be replaced, not extended.
    """
    return settings.base_url.rstrip("/") if settings.base_url else None
