"""The GoCardless contract harness, and a fault-injecting proxy in front of the sandbox.

The sandbox's own fault switch (``/_sandbox/faults``) fails requests before handling them;
these tests also need an answer lost *after* GoCardless acted, so :class:`FaultProxy` sits
between the connector and the sandbox: it forwards every request unchanged, except that
:meth:`FaultProxy.fail_next` makes it answer the next requests with a GoCardless-shaped error
(``{"error": {...}}`` with a ``request_id``, as the real API sends), either instead of
forwarding or *after* forwarding (the request reached GoCardless but the answer was lost: the
crash-in-flight case).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gocardless_pro
import pytest
import requests
from pydantic import SecretStr

from connectors.base import PspConnector
from connectors.gocardless import GoCardlessConnector
from connectors.gocardless.bank_details import register_bank_account
from connectors.gocardless.sandbox import RunningSandbox
from streams.records import PaymentCommand
from streams.settings import GoCardlessSettings, Settings

from .conftest import SECRET, TOKEN

#: Canonical status -> a GoCardless action producing it, per resource type (for webhooks).
ACTION_FOR: dict[str, dict[str, str]] = {
    "payments": {
        "pending_submission": "created",
        "submitted": "submitted",
        "confirmed": "confirmed",
        "failed": "failed",
        "cancelled": "cancelled",
        "charged_back": "charged_back",
    },
    "mandates": {
        "pending_submission": "created",
        "submitted": "submitted",
        "active": "active",
        "failed": "failed",
        "cancelled": "cancelled",
        "expired": "expired",
        "suspended": "suspended_by_payer",
    },
    "refunds": {"created": "created", "refunded": "paid", "failed": "failed"},
}


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    after_forward: bool
    message: str | None = None


class FaultProxy:
    """A forwarding HTTP proxy to ``upstream`` with scripted failures."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.forwarded: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        after_forward: bool = False,
        message: str | None = None,
    ) -> None:
        with self._lock:
            fault = _Fault(status, dict(headers or {}), after_forward, message)
            self._faults.extend([fault] * times)

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        fault = self._next_fault()
        if fault is None or fault.after_forward:
            skip = {"host", "content-length", "connection"}
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
            upstream = requests.request(
                handler.command, self.upstream + handler.path, data=body, headers=headers
            )
            self.forwarded.append((handler.command, handler.path))
            if fault is None:
                self._reply(handler, upstream.status_code, upstream.content, {})
                return
        assert fault is not None
        request_id = f"proxy-{uuid.uuid4()}"
        kind = "gocardless" if fault.status >= 500 else "invalid_api_usage"
        message = fault.message or f"injected HTTP {fault.status}"
        error = {
            "message": message,
            "type": kind,
            "code": fault.status,
            "request_id": request_id,
            "documentation_url": "https://developer.gocardless.com/api-reference#injected",
            "errors": [{"reason": "injected_fault", "message": message}],
        }
        data = json.dumps({"error": error}).encode()
        self._reply(handler, fault.status, data, {"X-Request-Id": request_id, **fault.headers})

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)


def proxy_for(sandbox: RunningSandbox) -> Iterator[FaultProxy]:
    proxy = FaultProxy(sandbox.base_url)
    yield proxy
    proxy.stop()


def settings_for(base_url: str) -> Settings:
    return Settings(
        gocardless=GoCardlessSettings(
            access_token=SecretStr(TOKEN), webhook_secret=SecretStr(SECRET), base_url=base_url
        )
    )


def make_connector(settings: Settings) -> GoCardlessConnector:
    """A connector that does not really sleep between in-process retries."""
    return GoCardlessConnector(settings, sleep=lambda _s: None)


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Webhook-Signature": signature}


def gc_event(
    resource_type: str,
    action: str,
    resource_id: str,
    *,
    aggregate_id: str | None = None,
    links: Mapping[str, str] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """A GoCardless event as the API and webhooks present it."""
    link = {"payments": "payment", "mandates": "mandate", "refunds": "refund"}[resource_type]
    return {
        "id": f"EV{uuid.uuid4().hex[:12].upper()}",
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="milliseconds"),
        "resource_type": resource_type,
        "action": action,
        "links": {link: resource_id, **(links or {})},
        "details": {"origin": "gocardless", "cause": f"{link}_{action}", "description": "x"},
        "metadata": {},
        "resource_metadata": {"paybus_aggregate_id": aggregate_id} if aggregate_id else {},
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class GoCardlessHarness:
    """The contract harness for GoCardless over the sandbox (behind the fault proxy)."""

    signature_header = "Webhook-Signature"

    def __init__(self, sandbox: RunningSandbox, proxy: FaultProxy) -> None:
        self.sandbox = sandbox
        self.proxy = proxy
        self.settings = settings_for(proxy.base_url)
        self.client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        connector = make_connector(self.settings)
        account = register_bank_account(
            connector.api, account_holder_name="Ada Lovelace", iban="GB82WEST12345698765432"
        )
        mandate = connector.execute(
            self.command("create_mandate", payment_method_ref=account.token)
        )
        assert mandate.psp_object_id
        self.mandate_id = mandate.psp_object_id

    def command(self, operation: str, **fields: Any) -> PaymentCommand:
        aggregate_type = {"create_mandate": "mandate", "refund": "refund"}.get(operation, "payment")
        values: dict[str, Any] = {
            "command_id": new_id("cmd"),
            "aggregate_id": new_id(aggregate_type[:3]),
            "aggregate_type": aggregate_type,
            "operation": operation,
            "psp": "gocardless",
            "issued_at": datetime.now(UTC),
        }
        values.update(fields)
        return PaymentCommand(**values)

    def new_connector(self) -> PspConnector:
        return make_connector(self.settings)

    def payment_command(self, scenario: str = "succeeds", **fields: Any) -> PaymentCommand:
        values: dict[str, Any] = {
            "amount_minor": 1500,
            "currency": "GBP",
            "method": "direct_debit",
            "mandate_ref": self.mandate_id,
            "description": "paybus contract",
        }
        if scenario == "declines":
            values["metadata"] = {"sandbox_outcome": "failed"}
        values.update(fields)
        return self.command("create_payment", **values)

    def count_payments(self) -> int:
        return sum(1 for _ in self.client.payments.all())

    def advance_to(self, psp_object_id: str, status: str) -> None:
        """One sandbox step at a time until the payment shows ``status`` (at most 6 steps)."""
        connector = self.new_connector()
        for _ in range(6):
            if connector.lookup_status("payment", psp_object_id).status == status:
                return
            self.sandbox.advance(steps=1)
        pytest.fail(f"{psp_object_id} never reached {status}")

    def webhook(
        self,
        *,
        aggregate_type: str,
        status: str,
        psp_object_id: str,
        aggregate_id: str,
        payment_id: str | None = None,
    ) -> bytes:
        """A batch: the wanted event between two events of other aggregates."""
        rtype = {"payment": "payments", "mandate": "mandates", "refund": "refunds"}[aggregate_type]
        links = {"payment": f"PM{psp_object_id}"} if rtype == "refunds" else None
        event = gc_event(
            rtype, ACTION_FOR[rtype][status], psp_object_id, aggregate_id=aggregate_id, links=links
        )
        if payment_id is not None:
            event["resource_metadata"]["paybus_payment_id"] = payment_id
        others = [
            gc_event("payments", "submitted", "PMOTHER1", aggregate_id=new_id("pay")),
            gc_event("mandates", "active", "MDOTHER1", aggregate_id=new_id("man")),
        ]
        batch = {"events": [others[0], event, others[1]], "meta": {"webhook_id": "WB0000001"}}
        return json.dumps(batch).encode()

    def sign(
        self, body: bytes, *, secret: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        return sign(body, secret or SECRET)

    def fail_next(
        self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None
    ) -> None:
        self.proxy.fail_next(status, times=times, headers=headers)
