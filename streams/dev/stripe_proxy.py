"""A thin proxy in front of localstripe that behaves like Stripe where localstripe does not.

localstripe ignores ``Idempotency-Key``; Stripe (https://docs.stripe.com/api/idempotent_requests)
saves the status and body of the first request made with a key and replays them (header
``Idempotent-Replayed: true``) for every later request with that key and the same parameters;
the same key with different parameters gets ``400`` with error type ``idempotency_error``; a
request arriving while the first is still executing gets ``409``. Results are saved only once
the endpoint started executing (not for 400 validation failures or 5xx).

It also fills these localstripe gaps, test-side only:

* every response gets a ``Request-Id`` (Stripe always sends one; errors carry it);
* a 402 on ``POST /v1/payment_intents`` is reshaped into Stripe's documented off-session decline:
  ``type=card_error``, ``decline_code`` and the failed ``payment_intent`` object;
* params localstripe rejects but Stripe accepts on PaymentIntent create (``description``,
  ``mandate``) are dropped before forwarding;
* ``GET /v1/balance_transactions?payout=`` answers from payouts registered with
  :meth:`IdempotencyProxy.settle_payout` (localstripe has no payout -> transaction link);
* injected faults (:meth:`IdempotencyProxy.fail_next`) answer the next requests with a given
  status and headers, for retry tests.

It counts PaymentIntents and Refunds actually created upstream, so crash tests can assert that a
replayed command created exactly one.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from streams.dev.localstripe import LoopThread, serve

_DROPPED_PI_PARAMS = ("description", "mandate")


@dataclass(frozen=True)
class _Saved:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: bytes
    content_type: str


def _error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, **extra}}, status=status)


class IdempotencyProxy:
    """Stripe's idempotency semantics and a few other Stripe behaviours over localstripe."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.base_url = ""
        #: Objects created upstream, by collection (``payment_intents``, ``refunds``).
        self.created: Counter[str] = Counter()
        #: Requests that were answered from the idempotency cache.
        self.replayed = 0
        self._saved: dict[str, _Saved] = {}
        self._inflight: set[str] = set()
        self._faults: deque[tuple[int, dict[str, str]]] = deque()
        self._payouts: dict[str, list[str]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- control (called from the test thread) --------------------------------------------------

    def start(self, loop_thread: LoopThread) -> IdempotencyProxy:
        async def _start() -> None:
            self._session = aiohttp.ClientSession()
            app = web.Application(middlewares=[self._request_id])
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner, self.base_url = await serve(app)

        loop_thread.run(_start())
        return self

    def stop(self, loop_thread: LoopThread) -> None:
        async def _stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        loop_thread.run(_stop())

    def reset(self) -> None:
        self.created.clear()
        self.replayed = 0
        self._saved.clear()
        self._faults.clear()
        self._payouts.clear()

    def fail_next(
        self, status: int, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``times`` API requests with ``status`` (and ``headers``)."""
        for _ in range(times):
            self._faults.append((status, dict(headers or {})))

    def settle_payout(self, payout_id: str, charge_txn_ids: list[str]) -> None:
        """Declare which balance transactions payout ``payout_id`` paid out."""
        self._payouts[payout_id] = list(charge_txn_ids)

    # --- serving --------------------------------------------------------------------------------

    @web.middleware
    async def _request_id(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers.setdefault("Request-Id", f"req_{secrets.token_hex(7)}")
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._faults and not request.path.startswith("/_config"):
            status, headers = self._faults.popleft()
            response = _error(status, "api_error", f"injected fault {status}")
            response.headers.update(headers)
            return response
        body = await request.read()
        if request.method == "GET" and request.path == "/v1/balance_transactions":
            payout = request.query.get("payout")
            if payout is not None:
                return await self._payout_transactions(request, payout)
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        if key is None:
            return await self._forward(request, body)
        fingerprint = (request.method, request.path, tuple(sorted(parse_qsl(body.decode()))))
        saved = self._saved.get(key)
        if saved is not None:
            if saved.fingerprint != fingerprint:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            self.replayed += 1
            response = web.Response(
                status=saved.status, body=saved.body, content_type=saved.content_type
            )
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Idempotency-Key"] = key
            return response
        if key in self._inflight:
            return _error(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this idempotency key.",
            )
        self._inflight.add(key)
        try:
            response = await self._forward(request, body)
            if response.status < 400 or response.status in (402, 404, 409):
                assert isinstance(response, web.Response) and response.body is not None
                self._saved[key] = _Saved(
                    fingerprint,
                    response.status,
                    bytes(response.body),  # type: ignore[arg-type]
                    response.content_type,
                )
            response.headers["Idempotency-Key"] = key
            return response
        finally:
            self._inflight.discard(key)

    async def _upstream(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes = b"",
        query: Any = None,
    ) -> tuple[int, bytes]:
        assert self._session is not None
        async with self._session.request(
            method, self.upstream + path, data=body or None, headers=headers, params=query
        ) as r:
            return r.status, await r.read()

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "stripe-version")
        }
        is_pi_create = request.method == "POST" and request.path == "/v1/payment_intents"
        if is_pi_create:
            pairs = [(k, v) for k, v in parse_qsl(body.decode()) if k not in _DROPPED_PI_PARAMS]
            body = urlencode(pairs).encode()
        status, payload = await self._upstream(
            request.method, request.path, headers=headers, body=body, query=request.query
        )
        creates = request.method == "POST" and request.path in (
            "/v1/payment_intents",
            "/v1/refunds",
        )
        if creates and (status == 200 or (is_pi_create and status == 402)):
            self.created[request.path.rsplit("/", 1)[-1]] += 1
        if is_pi_create and status == 402:
            payload = await self._card_error(payload, headers)
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _card_error(self, payload: bytes, headers: dict[str, str]) -> bytes:
        """Reshape localstripe's 402 into Stripe's documented off-session decline."""
        error = json.loads(payload).get("error", {})
        error["type"] = "card_error"
        if error.get("code") == "card_declined":
            error.setdefault("decline_code", "generic_decline")
        status, listing = await self._upstream(
            "GET", "/v1/payment_intents", headers=headers, query={"limit": "100"}
        )
        for pi in json.loads(listing).get("data", []) if status == 200 else []:
            charge = pi.get("latest_charge")
            charge_id = charge.get("id") if isinstance(charge, dict) else charge
            if charge_id and charge_id == error.get("charge"):
                error["payment_intent"] = pi
                break
        return json.dumps({"error": error}).encode()

    async def _payout_transactions(self, request: web.Request, payout: str) -> web.Response:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        data = []
        for txn_id in self._payouts.get(payout, []):
            _, raw = await self._upstream(
                "GET", f"/v1/balance_transactions/{txn_id}", headers=headers
            )
            txn = json.loads(raw)
            source = txn.get("source")
            if isinstance(source, str) and source.startswith("ch_"):
                _, charge = await self._upstream("GET", f"/v1/charges/{source}", headers=headers)
                txn["source"] = json.loads(charge)
            data.append(txn)
        body = {
            "object": "list",
            "url": "/v1/balance_transactions",
            "has_more": False,
            "data": data,
        }
        return web.json_response(body)
