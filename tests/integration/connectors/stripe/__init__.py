"""Stripe connector tests against localstripe (in process, behind an idempotency proxy)."""
