"""Stripe connector package: ``StripeConnector`` is the ``stripe`` entry point."""

from __future__ import annotations

from connectors.stripe.connector import StripeConnector

__all__ = ["StripeConnector"]
