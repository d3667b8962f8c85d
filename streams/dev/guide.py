"""What ``paybus dev`` tells its user: how to reach the running stack from another shell.

A newcomer exploring the stack wants to run ``paybus lag`` or ``paybus dlq list`` against it and
to POST a signed webhook by hand; both need values (the broker's port, the stand-ins' secrets)
that used to be only in the source. Every secret printed here is one of the stand-ins' fixed
dev-only values (:mod:`streams.dev.stack`), never anything read from the user's environment.

Stripe is reached through an idempotency proxy in front of localstripe (localstripe ignores
``Idempotency-Key``; see :mod:`streams.dev.stripe_proxy`): the proxy is what the worker uses and
what a user should use too, so it is the one printed as "Stripe API"; localstripe's own address
is labelled as such.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from connectors.gocardless.settings import SIGNATURE_HEADER as GC_SIGNATURE_HEADER
from connectors.stripe.settings import SIGNATURE_HEADER as STRIPE_SIGNATURE_HEADER
from streams.dev.stack import CRM_INGEST_SECRET, GC_SECRET, GC_TOKEN, STRIPE_KEY, STRIPE_SECRET

#: The header ``POST /events/crm`` checks (streams.agents.crm_ingest; not imported: it pulls
#: in the Faust app).
CRM_SIGNATURE_HEADER = "X-Paybus-Signature"


def export_line(bootstrap: str) -> str:
    """The shell line pointing the CLI at a broker (the wording ``paybus broker`` prints)."""
    return f"export PAYBUS_BOOTSTRAP_SERVERS={bootstrap}"


@dataclass(frozen=True)
class Endpoints:
    """Where each part of the running stack answers."""

    worker: str
    bootstrap: str
    stripe: str
    localstripe: str
    gocardless: str
    salesforce: str
    #: The rest of what the CLI needs (:meth:`~streams.dev.stack.DevStack.cli_env`), in order.
    cli_env: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def of(cls, stack: Any) -> Endpoints:
        """The endpoints of a started :class:`~streams.dev.stack.DevStack`."""
        return cls(
            worker=stack.worker_url,
            bootstrap=stack.bootstrap,
            stripe=stack.stripe_base_url,
            localstripe=str(stack.localstripe.base_url),
            gocardless=str(stack.gocardless.base_url),
            salesforce=str(stack.salesforce.instance_url),
            cli_env=tuple(stack.cli_env().items()),
        )


def ready_lines(ends: Endpoints) -> list[str]:
    """How to point the CLI at the stack and sign requests to the worker (dev-only secrets)."""
    hmac = "hex HMAC-SHA256"
    return [
        "point the CLI at it (in another shell; trace, dlq, lag, crm check, backfill):",
        f"  {export_line(ends.bootstrap)}",
        *(
            f"  export {name}={shlex.quote(value)}"
            for name, value in ends.cli_env
            if name != "PAYBUS_BOOTSTRAP_SERVERS"
        ),
        "signed requests the worker takes (fixed dev-only secrets of the stand-ins):",
        f"  POST {ends.worker}/webhooks/stripe  secret {STRIPE_SECRET}",
        f"    {STRIPE_SIGNATURE_HEADER}: t=<unix time>,v1=<{hmac} of '<t>.<body>'>",
        f"  POST {ends.worker}/webhooks/gocardless  secret {GC_SECRET}",
        f"    {GC_SIGNATURE_HEADER}: <{hmac} of the body>",
        f"  POST {ends.worker}/events/crm  secret {CRM_INGEST_SECRET}",
        f"    {CRM_SIGNATURE_HEADER}: t=<unix time>,sha256=<{hmac} of '<t>.<body>'>",
    ]


def explore_lines(ends: Endpoints) -> list[str]:
    """The stack's addresses, each with what a user needs to talk to it."""
    return [
        "explore:",
        f"  metrics     {ends.worker}/metrics",
        f"  broker      {ends.bootstrap}",
        f"  Stripe API  {ends.stripe}  (key {STRIPE_KEY}; what the worker uses)",
        "              (localstripe behind an idempotency proxy;"
        f" localstripe itself: {ends.localstripe})",
        f"  GoCardless  {ends.gocardless}  (token {GC_TOKEN})",
        f"  Salesforce  {ends.salesforce}",
        "Ctrl-C to stop.",
    ]
