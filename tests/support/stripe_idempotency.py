"""The idempotency proxy in front of localstripe lives in :mod:`streams.dev.stripe_proxy`."""

from streams.dev.stripe_proxy import IdempotencyProxy

__all__ = ["IdempotencyProxy"]
