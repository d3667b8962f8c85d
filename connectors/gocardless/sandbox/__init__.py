"""A GoCardless sandbox: a real HTTP server on loopback for the real ``gocardless_pro`` client.

It speaks the subset of GoCardless's REST API that paybus's connector uses (customers,
customer bank accounts, mandates, payments, refunds, payouts, events, bank details lookups),
with GoCardless's envelopes, id prefixes, cursor paging, error shapes and idempotency
conflicts, keeps its state in SQLite, moves objects through their lifecycles on a controllable
clock, and delivers signed webhook batches that can be shuffled, duplicated or dropped on
purpose. The demo runs it with ``python -m connectors.gocardless.sandbox``; tests use
``start_sandbox()``. Admin routes are listed in ``admin.py``.
"""

from .server import RunningSandbox, SandboxAdminError, start_sandbox
from .state import SandboxSettings
from .webhooks import WebhookConfig

__all__ = [
    "RunningSandbox",
    "SandboxAdminError",
    "SandboxSettings",
    "WebhookConfig",
    "start_sandbox",
]
