"""Signed links to payment pages (pure: no I/O; the pages are :mod:`streams.pages`).

A link is ``<base>/pay/<psp>/<PSP object id>?exp=<unix>&sig=<hex>``, the signature an
HMAC-SHA256 under ``pages.secret`` of the PSP, the object id and the expiry: it cannot be
pointed at another payment or made to last longer.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from urllib.parse import parse_qs, quote, urlencode, urlsplit

#: The attribute of a status update carrying the payment's page link (to the CRM record).
PAGE_URL_ATTRIBUTE = "payment_page_url"


class PageLinkError(Exception):
    """A page link that must not open: ``status`` is the HTTP answer (403 forged, 410 expired)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _signature(secret: str, psp: str, object_id: str, expires: int) -> str:
    message = f"{psp}\n{object_id}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


#: Most digits an expiry may have (unix seconds stay under 12 digits for 30,000 years): a
#: longer one is refused before ``int`` sees it (Python refuses over 4,300 digits, a 500).
_EXP_DIGITS = 12


def page_url(base_url: str, psp: str, object_id: str, exp: int | str, sig: str) -> str:
    """The page URL of ``object_id`` at ``psp`` under ``base_url`` with ``exp`` and ``sig``."""
    query = urlencode({"exp": exp, "sig": sig})
    return f"{base_url}/pay/{quote(psp, safe='')}/{quote(object_id, safe='')}?{query}"


def page_link(base_url: str, secret: str, psp: str, object_id: str, expires: int) -> str:
    """The signed link to the page of ``object_id`` at ``psp``, valid until ``expires``."""
    sig = _signature(secret, psp, object_id, expires)
    return page_url(base_url, psp, object_id, expires, sig)


def link_for(
    base_url: str, secret: str, psp: str, object_id: str, requested: datetime, ttl_s: int
) -> str:
    """:func:`page_link` expiring ``ttl_s`` after ``requested`` (the command's issue time):
    the same command always gives the same link."""
    return page_link(base_url, secret, psp, object_id, int(requested.timestamp()) + ttl_s)


def link_expiry(url: str) -> int | None:
    """The expiry (unix seconds) a page link names, or None when it names none that could
    open a page (missing, not digits, too long).

    Unchecked: the bus reads it off the link it wrote itself (the janitor, to cancel the
    payment once its link is dead). The link, not the command's issue time plus today's
    ``pages.link_ttl_s``, is what the customer holds, and the TTL may have changed since."""
    values = parse_qs(urlsplit(url).query).get("exp") or []
    exp = values[0] if len(values) == 1 else None
    if exp is None or not (0 < len(exp) <= _EXP_DIGITS and exp.isascii() and exp.isdigit()):
        return None
    return int(exp)


def check_link(
    secret: str, psp: str, object_id: str, exp: str | None, sig: str | None, now: float
) -> None:
    """Raise :class:`PageLinkError` unless ``exp``/``sig`` are a live link's.

    An empty secret opens nothing (an HMAC under an empty key is one anyone can compute).
    The comparison is of bytes, so odd characters in ``sig`` are a forgery, not a crash."""
    digits = exp is not None and 0 < len(exp) <= _EXP_DIGITS and exp.isascii() and exp.isdigit()
    if not secret or not sig or exp is None or not digits:
        raise PageLinkError("this payment link is incomplete", 403)
    want = _signature(secret, psp, object_id, int(exp)).encode()
    if not hmac.compare_digest(want, sig.encode("utf-8", "surrogatepass")):
        raise PageLinkError("this payment link is not valid", 403)
    if int(exp) < now:
        raise PageLinkError("this payment link has expired; ask for a new one", 410)
