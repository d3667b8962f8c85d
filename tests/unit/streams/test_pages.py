"""Payment page links and HTML (pure: no broker, no PSP)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from connectors.base import PageState
from streams.page_html import amount_text, render
from streams.page_links import PageLinkError, check_link, link_for, page_link
from streams.pages import PaymentPages, page_headers
from streams.secrets_check import insecure_secrets
from streams.settings import Settings

SECRET = "page-secret"
NOW = 1_800_000_000.0


def _parts(link: str) -> tuple[str, str, str, str]:
    url = urlsplit(link)
    _, _, psp, object_id = url.path.split("/")
    query = parse_qs(url.query)
    return psp, object_id, query["exp"][0], query["sig"][0]


def test_a_link_opens_its_own_payment_until_it_expires() -> None:
    link = page_link("https://pay.example.com", SECRET, "stripe", "pi_1", int(NOW) + 60)
    assert link.startswith("https://pay.example.com/pay/stripe/pi_1?exp=1800000060&sig=")
    psp, object_id, exp, sig = _parts(link)
    check_link(SECRET, psp, object_id, exp, sig, NOW)  # opens
    with pytest.raises(PageLinkError) as expired:
        check_link(SECRET, psp, object_id, exp, sig, NOW + 61)
    assert expired.value.status == 410


@pytest.mark.parametrize(
    ("psp", "object_id", "exp", "sig", "secret"),
    [
        ("stripe", "pi_2", None, None, SECRET),  # another payment
        ("gocardless", "pi_1", None, None, SECRET),  # another PSP
        ("stripe", "pi_1", "1900000000", None, SECRET),  # stretched
        ("stripe", "pi_1", None, "0" * 64, SECRET),  # made up
        ("stripe", "pi_1", None, "\udce9", SECRET),  # odd bytes: refused, not a crash
        ("stripe", "pi_1", "²", None, SECRET),  # a digit, but not an ASCII one
        ("stripe", "pi_1", None, None, ""),  # an empty key signs nothing
        ("stripe", "pi_1", "", None, SECRET),
    ],
)
def test_a_link_cannot_be_bent(
    psp: str, object_id: str, exp: str | None, sig: str | None, secret: str
) -> None:
    _, _, good_exp, good_sig = _parts(page_link("b", SECRET, "stripe", "pi_1", int(NOW) + 60))
    with pytest.raises(PageLinkError) as refused:
        check_link(secret, psp, object_id, good_exp if exp is None else exp,
                   good_sig if sig is None else sig, NOW)  # fmt: skip
    assert refused.value.status == 403


def test_the_same_command_gives_the_same_link() -> None:
    issued = datetime(2026, 12, 4, 12, tzinfo=UTC)
    first = link_for("b", SECRET, "stripe", "pi_1", issued, 3600)
    assert first == link_for("b", SECRET, "stripe", "pi_1", issued, 3600)
    assert _parts(first)[2] == str(int(issued.timestamp()) + 3600)


def test_amounts_in_the_currencys_own_unit() -> None:
    assert amount_text(2500, "eur") == "25.00 EUR"
    assert amount_text(1500, "JPY") == "1500 JPY"
    assert amount_text(1234, "KWD") == "1.234 KWD"


def test_pages_escape_what_they_show() -> None:
    state = PageState("open", 2500, "EUR", description="<script>alert(1)</script>",
                      client_secret="pi_1_secret_</script><b>")  # fmt: skip
    form = render("form", state=state, publishable_key="pk_1", js_url="https://js/v3/",
                  return_url="https://pay/x?a=1&b=2", nonce="n1")  # fmt: skip
    assert "<script>alert(1)</script>" not in form and "&lt;script&gt;" in form
    assert "</script><b>" not in form, "a value must not end the script element"
    assert '"pk_1"' in form and '<script src="https://js/v3/">' in form
    closed = render("error", message="<b>no</b>", state=PageState("closed", 1, "EUR"))
    assert "&lt;b&gt;no&lt;/b&gt;" in closed and "Payment not possible" in closed
    assert "being processed" in render("exit", state=PageState("processing", 1, "EUR"))


def test_headers_let_only_stripe_js_and_the_pages_own_script_in() -> None:
    headers = page_headers("https://js.stripe.com/v3/", "https://api.stripe.com", "n0nce")
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    policy = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    stripe_js = "https://js.stripe.com https://*.js.stripe.com"
    # no 'unsafe-inline': a script that got into the page some other way does not run
    assert policy["script-src"] == f"'nonce-n0nce' {stripe_js}"
    assert policy["frame-src"] == f"{stripe_js} https://hooks.stripe.com"
    assert policy["connect-src"] == f"https://api.stripe.com {stripe_js}"
    assert policy["frame-ancestors"] == "'none'", "another site must not frame the payment page"
    assert policy["base-uri"] == "'none'" and policy["object-src"] == "'none'"
    local = page_headers("http://127.0.0.1:8420/js.stripe.com/v3/", "http://127.0.0.1:8420", "n")
    assert "script-src 'nonce-n' http://127.0.0.1:8420;" in local["Content-Security-Policy"]
    state = PageState("open", 2500, "EUR", client_secret="pi_1_secret_x")
    form = render("form", state=state, publishable_key="pk_1", js_url="https://js/v3/",
                  return_url="https://pay/x", nonce="n0nce")  # fmt: skip
    assert form.count("<script") == 2 and '<script nonce="n0nce">' in form


def test_an_expiry_too_long_to_be_one_is_refused_not_a_crash() -> None:
    with pytest.raises(PageLinkError) as refused:
        check_link(SECRET, "stripe", "pi_1", "9" * 5000, "0" * 64, NOW)
    assert refused.value.status == 403


class _Stripe:
    def page_state(self, object_id: str) -> PageState:
        return PageState("open", 2500, "EUR", client_secret=f"{object_id}_secret_x")


async def _page(query: str) -> tuple[int, str]:
    """What the page view answers a request for ``/pay/stripe/pi_1?<query>``."""
    app = SimpleNamespace(settings=Settings(), page=lambda path: lambda view: view,
                          loop=asyncio.get_running_loop())  # fmt: skip
    pages = PaymentPages(app)  # type: ignore[arg-type]
    pages.connectors._cache["stripe"] = _Stripe()  # type: ignore[assignment]
    # the worker's own view of the request: http, and its pod's address behind the ingress
    request = SimpleNamespace(query=dict(parse_qsl(query)),
                              url=f"http://10.0.0.7:6066/pay/stripe/pi_1?{query}")  # fmt: skip
    return await pages.page(request, "stripe", "pi_1", "n0nce")  # type: ignore[arg-type]


async def test_the_page_sends_its_customer_back_to_the_public_link(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_PROFILE", "production")
    monkeypatch.setenv("PAYBUS_PAGES__PUBLIC_URL", "https://pay.example.com")
    monkeypatch.setenv("PAYBUS_PAGES__SECRET", SECRET)
    link = page_link("https://pay.example.com", SECRET, "stripe", "pi_1", int(NOW) + 3600)
    monkeypatch.setattr("streams.pages.time.time", lambda: NOW)
    status, html = await _page(urlsplit(link).query)
    assert status == 200 and "10.0.0.7" not in html
    assert f'window.location.replace("{link}")' in html


async def test_no_page_opens_while_pages_are_off(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_PROFILE", "production")  # no PUBLIC_URL: pages off
    # the default secret is public and refused only while pages are on: a link made with it
    # must open nothing on a worker whose pages are off
    default = Settings().pages.secret.get_secret_value()
    link = page_link("https://x", default, "stripe", "pi_1", int(NOW) + 3600)
    monkeypatch.setattr("streams.pages.time.time", lambda: NOW)
    status, html = await _page(urlsplit(link).query)
    assert status == 404 and "no such payment" in html


def test_page_links_default_to_the_embedded_web_port_and_are_off_in_production(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_WEB_PORT", "7070")
    assert Settings().page_base_url == "http://127.0.0.1:7070"
    monkeypatch.setenv("PAYBUS_PROFILE", "production")
    assert Settings().page_base_url is None
    assert not any("PAGES" in e for e in insecure_secrets(Settings(), ["web", "connectors"]))
    monkeypatch.setenv("PAYBUS_PAGES__PUBLIC_URL", "https://pay.example.com/")
    assert Settings().page_base_url == "https://pay.example.com"
    errors = insecure_secrets(Settings(), ["connectors"])
    assert [e for e in errors if e.startswith("PAYBUS_PAGES__SECRET ")], errors
    monkeypatch.setenv("PAYBUS_PAGES__SECRET", "a-page-secret-of-our-own")
    errors = insecure_secrets(Settings(), ["web"])
    assert [e for e in errors if e.startswith("PAYBUS_STRIPE__PUBLISHABLE_KEY ")], errors
    monkeypatch.setenv("PAYBUS_STRIPE__PUBLISHABLE_KEY", "pk_live_ours")
    assert not [e for e in insecure_secrets(Settings(), ["web"]) if "PAGES" in e or "PUB" in e]


def test_embedded_links_name_a_host_a_browser_can_reach(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("PAYBUS_WEB_PORT", "7070")
    assert Settings().page_base_url == "http://127.0.0.1:7070"
