"""Fixtures for the GoCardless sandbox tests: a fresh sandbox, the real client, a receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gocardless_pro
import pytest

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox

TOKEN = "test_token"
SECRET = "test_webhook_secret"


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(token=TOKEN, webhook_secret=SECRET) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> gocardless_pro.Client:
    return gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)


def make_mandate(client: gocardless_pro.Client, **mandate: Any) -> Any:
    """A customer, a GB bank account and a mandate on it; returns the mandate."""
    customer = client.customers.create(
        {"given_name": "Ada", "family_name": "Lovelace", "email": "ada@example.com"}
    )
    account = client.customer_bank_accounts.create(
        {
            "account_number": "55779911",
            "branch_code": "200000",
            "country_code": "GB",
            "account_holder_name": "Ada Lovelace",
            "links": {"customer": customer.id},
        }
    )
    return client.mandates.create({"links": {"customer_bank_account": account.id}, **mandate})


def make_payment(client: gocardless_pro.Client, mandate_id: str, **extra: Any) -> Any:
    params = {"amount": 1500, "currency": "GBP", "links": {"mandate": mandate_id}, **extra}
    return client.payments.create(params)


@dataclass
class Receiver:
    """A tiny webhook endpoint that records raw bodies and headers, for waiting on."""

    url: str = ""
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    status: int = 204
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, dict[str, str]]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.cond:
                state.requests.append((body, dict(self.headers)))
                state.cond.notify_all()
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/gocardless"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
