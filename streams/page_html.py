"""The payment page's HTML: the form, the exit page and the error page (streams/pages.py).

Plain server-rendered pages with one script: Stripe.js collects the card in its own frame and
confirms the payment with Stripe directly, so the card never passes through the bus. Every
value is escaped for where it lands (HTML text, or a JSON literal inside the script).
"""

from __future__ import annotations

import html
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from streams.routing import MINOR_DIGITS

if TYPE_CHECKING:
    from connectors.base import PageState

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}.amount{font-size:2rem;margin:.5rem 0 1.5rem}
#card{padding:.8rem;border:1px solid #bbb;border-radius:6px;margin-bottom:1rem}
button{width:100%;padding:.8rem;font-size:1rem;border:0;border-radius:6px;background:#2b59c3;
color:#fff;cursor:pointer}button:disabled{opacity:.6}#err{color:#b00020;min-height:1.2rem}
"""

_FORM_SCRIPT = """
const stripe = Stripe(%(key)s);
const card = stripe.elements().create("card");
card.mount("#card");
const form = document.getElementById("pay"), button = form.querySelector("button");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  button.disabled = true;
  const result = await stripe.confirmCardPayment(%(secret)s, {payment_method: {card: card}});
  if (result.error) {
    document.getElementById("err").textContent = result.error.message;
    button.disabled = false;
    return;
  }
  window.location.replace(%(back)s);
});
"""


def amount_text(amount_minor: int, currency: str) -> str:
    """``1500, "EUR"`` -> ``15.00 EUR`` (the currency's own minor unit)."""
    digits = MINOR_DIGITS.get(currency.upper(), 2)
    major = Decimal(amount_minor).scaleb(-digits)
    return f"{major:.{digits}f} {currency.upper()}"


def _js(value: str) -> str:
    """A JSON string literal safe inside a ``<script>`` element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def _page(
    title: str, body: str, script: str = "", script_src: str | None = None, nonce: str = ""
) -> str:
    src = f'<script src="{html.escape(script_src)}"></script>' if script_src else ""
    tail = f'<script nonce="{html.escape(nonce)}">{script}</script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{src}</head>"
        f"<body>{body}{tail}</body></html>"
    )


def _summary(state: PageState | None) -> str:
    if state is None:
        return ""
    what = f"<p>{html.escape(state.description)}</p>" if state.description else ""
    amount = html.escape(amount_text(state.amount_minor, state.currency))
    return f'{what}<p class="amount">{amount}</p>'


def render(kind: str, **values: Any) -> str:
    """The page of ``kind``: ``form`` (needs ``state``, ``publishable_key``, ``js_url``,
    ``return_url`` and ``nonce``, the one the response's CSP names), ``exit`` (``state``) or
    ``error`` (``message``, optional ``state``)."""
    state: PageState | None = values.get("state")
    if kind == "form":
        assert state is not None and state.client_secret
        script = _FORM_SCRIPT % {
            "key": _js(values["publishable_key"]),
            "secret": _js(state.client_secret),
            "back": _js(values["return_url"]),
        }
        body = (
            f"<h1>Payment</h1>{_summary(state)}"
            '<form id="pay"><div id="card"></div><p id="err" role="alert"></p>'
            "<button type=submit>Pay</button></form>"
        )
        return _page("Payment", body, script, values["js_url"], values["nonce"])
    if kind == "exit":
        pending = state is not None and state.state == "processing"
        text = "Your payment is being processed." if pending else "Your payment has been received."
        return _page("Thank you", f"<h1>Thank you</h1>{_summary(state)}<p>{text}</p>")
    message = html.escape(str(values.get("message") or "this payment cannot be made"))
    body = f"<h1>Payment not possible</h1>{_summary(state)}<p>{message}</p>"
    return _page("Payment not possible", body)
