"""Hosted payment pages: a CRM record asks for a payment, the customer pays on a page.

The flow the seed products are built around (Asperato ONE: record -> payment page URL -> PSP
-> record updated; JustOn's payment links). A ``request_payment`` intent (or, from
Salesforce, a card payment record with no card token) makes the PSP create a payment that
waits for the customer (``pending_customer_approval``); the connector stage puts a signed
link to its page on that status update, and the CRM writer writes it to the record
(``Payment_Page_URL__c``), where staff send it to the customer.

``GET /pay/{psp}/{psp object id}?exp=<unix>&sig=<hex>`` on the ``web`` role serves the page.
The link is an HMAC-SHA256 (``pages.secret``) of the PSP, the object id and the expiry, so it
cannot be pointed at another payment or made to last longer: a bad signature is a 403, an
expired link a 410. The page asks the PSP for the payment's state each time and shows the
form while it waits for the customer, the exit page once paid, the error page once
cancelled or failed. The card goes from the customer's browser straight to the PSP (Stripe.js
Elements); no card number reaches the bus, so none can reach Kafka, a log or the CRM. The
outcome reaches the CRM the usual way: the PSP's webhook, sequenced.
"""

from __future__ import annotations

import logging
import secrets
import time
from urllib.parse import urlsplit

from faust.web import Request, Response, View

from connectors.errors import ConnectorError, NotFoundError, UnknownConnectorError
from streams.agents.common import Connectors
from streams.app import PaybusApp
from streams.page_html import render
from streams.page_links import PageLinkError, check_link, page_url

log = logging.getLogger(__name__)


class PaymentPages:
    """``GET /pay/{psp}/{object_id}`` on the ``web`` role (see the module doc)."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        self.connectors = Connectors(app)
        base = app.settings.stripe.base_url
        #: Stripe.js: Stripe's own, or the stand-in localstripe serves (embedded profile).
        self.js_url = f"{base.rstrip('/')}/js.stripe.com/v3/" if base else STRIPE_JS
        self.api_url = base.rstrip("/") if base else STRIPE_API
        stage = self

        @app.page("/pay/{psp}/{object_id}")
        class Page(View):
            """The payment page of one PSP object."""

            async def get(self, request: Request, psp: str, object_id: str) -> Response:
                nonce = secrets.token_urlsafe(16)  # this response's inline script only
                status, html = await stage.page(request, psp, object_id, nonce)
                response = self.html(html, status=status)
                response.headers.update(page_headers(stage.js_url, stage.api_url, nonce))
                return response

    async def page(self, request: Request, psp: str, object_id: str, nonce: str) -> tuple[int, str]:
        settings = self.app.settings
        base = settings.page_base_url
        if base is None:  # pages off: no link was made, and the secret may be the default
            return 404, render("error", message="there is no such payment")
        query = request.query
        exp, sig = query.get("exp"), query.get("sig")
        try:
            check_link(settings.pages.secret.get_secret_value(), psp, object_id, exp, sig,
                       time.time())  # fmt: skip
        except PageLinkError as exc:
            return exc.status, render("error", message=str(exc))
        try:
            connector = self.connectors.get(psp)
            state = await self.app.loop.run_in_executor(
                None, connector.page_state, object_id
            )  # an HTTP call to the PSP: off the event loop
        except (UnknownConnectorError, NotFoundError, NotImplementedError):
            return 404, render("error", message="there is no such payment")
        except ConnectorError as exc:
            log.warning("payment page %s/%s: the PSP did not answer: %s", psp, object_id, exc)
            return 503, render("error", message="payments are unavailable; try again shortly")
        if state.state == "open":
            return 200, render(
                "form",
                state=state,
                publishable_key=settings.stripe.publishable_key,
                js_url=self.js_url,
                # the link as the customer was given it: the worker's own view of the request
                # (http behind a TLS proxy, an internal host) is no place to send them back to
                return_url=page_url(base, psp, object_id, str(exp), str(sig)),
                nonce=nonce,
            )
        if state.state in ("paid", "processing"):
            return 200, render("exit", state=state)
        return 200, render("error", message=state.reason or "this payment is closed", state=state)


STRIPE_JS = "https://js.stripe.com/v3/"
STRIPE_API = "https://api.stripe.com"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def page_headers(js_url: str, api_url: str, nonce: str) -> dict[str, str]:
    """The page holds a client secret: never cached, never sent on as a referrer, never
    framed by another site; only Stripe.js and the page's own script (``nonce``: no other
    inline script, injected or not, runs) may run, call out or frame in it (Stripe's 3-D
    Secure frames included)."""
    js, api = _origin(js_url), _origin(api_url)
    if js == _origin(STRIPE_JS):
        js = f"{js} https://*.js.stripe.com"  # Stripe.js's own frames (Stripe's CSP guide)
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'nonce-{nonce}' {js}; "
            f"frame-src {js} https://hooks.stripe.com; connect-src {api} {js}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
    }
