"""The sandbox's HTTP surface: GoCardless's REST subset plus ``/_sandbox`` admin routes.

Routes, envelopes, status codes and error bodies follow what the ``gocardless_pro`` client
sends and expects (see ``api_client.py`` and ``services/*`` in the installed package): creates
answer 201 ``{"payments": {...}}``, lists ``{"payments": [...], "meta": {"cursors": ...,
"limit": n}}`` newest first, and every failure is a JSON ``{"error": {...}}`` - even an unknown
path, because the client retries non-JSON answers as if the network had failed.

Admin routes (``/_sandbox/...``) take no API token; if the sandbox was given an
``admin_token`` they require header ``X-Sandbox-Admin-Token`` instead. An authenticated API
request may be answered by an injected fault instead (``/_sandbox/faults``, see ``faults``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from .admin import admin_routes, background
from .clock import canonical_time
from .errors import ApiProblem, api_usage, idempotent_conflict, not_found
from .faults import Faults
from .lifecycle import Engine
from .resources import CREATORS, lookup_bank_details, update
from .state import DELIVERY_LOCK, ENGINE, FAULTS, SESSION, SETTINGS, SandboxSettings
from .store import Filter, Json, Store

log = logging.getLogger(__name__)

EQUALITY: dict[str, dict[str, str]] = {
    "customers": {},
    "customer_bank_accounts": {"customer": "$.links.customer"},
    "mandates": {
        "customer": "$.links.customer", "customer_bank_account": "$.links.customer_bank_account",
        "status": "$.status", "reference": "$.reference", "scheme": "$.scheme",
        "creditor": "$.links.creditor",
    },
    "payments": {"mandate": "$.links.mandate", "status": "$.status", "currency": "$.currency",
                 "scheme": "$.scheme", "creditor": "$.links.creditor"},
    "refunds": {"payment": "$.links.payment", "mandate": "$.links.mandate"},
    "payouts": {"status": "$.status", "currency": "$.currency", "payout_type": "$.payout_type",
                "creditor": "$.links.creditor"},
    "events": {"resource_type": "$.resource_type", "action": "$.action",
               "payment": "$.links.payment", "mandate": "$.links.mandate",
               "refund": "$.links.refund", "payout": "$.links.payout"},
}  # fmt: skip
RANGES = {"created_at": "$.created_at", "charge_date": "$.charge_date"}
OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
IGNORED = {"include"}
ACTIONS = {("payments", "cancel"), ("payments", "retry"), ("mandates", "cancel")}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(problem: ApiProblem, request_id: str) -> web.Response:
    return web.json_response(
        problem.body(request_id), status=problem.status, headers={"X-Request-Id": request_id}
    )


@web.middleware
async def gocardless_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, then turn every failure into GoCardless's JSON error envelope."""
    request_id = str(uuid.uuid4())
    settings = request.app[SETTINGS]
    auth = request.headers.get("Authorization", "")
    if request.path.startswith("/_sandbox/"):
        given = request.headers.get("X-Sandbox-Admin-Token")
        if settings.admin_token is not None and given != settings.admin_token:
            return _answer(api_usage(401, "unauthorized", "Admin token required"), request_id)
    elif auth != f"Bearer {settings.token}":
        reason = "missing_authorization_header" if not auth else "access_token_not_found"
        return _answer(
            api_usage(401, reason, "Unauthorized: a valid Bearer token is required"), request_id
        )
    elif (fault := request.app[FAULTS].take(request.method, request.path)) is not None:
        return _answer(fault, request_id)
    try:
        return await handler(request)
    except ApiProblem as problem:
        return _answer(problem, request_id)
    except web.HTTPNotFound:
        return _answer(
            api_usage(404, "path_not_found", f"Path not found: {request.path}"), request_id
        )
    except web.HTTPMethodNotAllowed:
        return _answer(
            api_usage(405, "method_not_allowed", f"{request.method} is not allowed here"),
            request_id,
        )
    except Exception:
        log.exception("sandbox request failed: %s %s", request.method, request.path)
        internal = ApiProblem(500, "gocardless", "Internal sandbox error", [
            {"reason": "internal_server_error", "message": "Internal sandbox error"}])  # fmt: skip
        return _answer(internal, request_id)


async def _body(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise api_usage(400, "invalid_json", "The request body is not valid JSON") from exc
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise api_usage(400, "invalid_document_structure", "The body must be a JSON object")
    return body


async def _envelope(request: web.Request, key: str) -> Json:
    inner = (await _body(request)).get(key)
    if not isinstance(inner, dict):
        raise api_usage(400, "invalid_document_structure", f'The body must be {{"{key}": {{...}}}}')
    return inner


def _filters(rtype: str, query: dict[str, str]) -> list[Filter]:
    filters: list[Filter] = []
    for name, value in query.items():
        if name in {"limit", "after", "before"} or name in IGNORED:
            continue
        field, _, op = name.partition("[")
        op = op.rstrip("]")
        if op and field in RANGES and op in OPS and (field == "created_at" or rtype == "payments"):
            try:
                bound = canonical_time(value) if field == "created_at" else value[:10]
            except ValueError as exc:
                raise api_usage(400, "invalid_filters", f"{name} must be a timestamp") from exc
            filters.append(Filter(RANGES[field], OPS[op], bound))
        elif not op and name in EQUALITY[rtype]:
            filters.append(Filter(EQUALITY[rtype][name], "IN", value.split(",")))
        elif not op and name == "customer" and rtype == "payments":
            filters.append(Filter("$.links.mandate", "IN_MANDATES_OF", value))
        else:
            raise api_usage(400, "invalid_filters", f"Unsupported filter for {rtype}: {name}")
    return filters


def resource_routes(rtype: str) -> list[web.RouteDef]:
    """GET list / GET one / PUT (and POST create where GoCardless allows it) for one type."""

    async def list_(request: web.Request) -> web.Response:
        query = dict(request.query)
        try:
            limit = int(query.get("limit", "50"))
        except ValueError as exc:
            raise api_usage(400, "invalid_limit", "limit must be an integer") from exc
        if not 1 <= limit <= 500:
            raise api_usage(400, "invalid_limit", "limit must be between 1 and 500")
        try:
            page = request.app[ENGINE].store.page(
                rtype, _filters(rtype, query), limit, query.get("after"), query.get("before")
            )
        except KeyError as exc:
            raise api_usage(400, "invalid_cursor", f"Unknown cursor {exc}") from exc
        meta = {"cursors": {"before": page.before, "after": page.after}, "limit": limit}
        return web.json_response({rtype: page.items, "meta": meta})

    async def get(request: web.Request) -> web.Response:
        record = request.app[ENGINE].store.get(rtype, request.match_info["id"])
        if record is None:
            raise not_found(rtype, request.match_info["id"])
        return web.json_response({rtype: record.data})

    async def put(request: web.Request) -> web.Response:
        params = await _envelope(request, rtype)
        data = update(request.app[ENGINE], rtype, request.match_info["id"], params)
        if data is None:
            raise not_found(rtype, request.match_info["id"])
        return web.json_response({rtype: data})

    async def create(request: web.Request) -> web.Response:
        params = await _envelope(request, rtype)
        engine = request.app[ENGINE]
        key = request.headers.get("Idempotency-Key")
        existing = engine.store.idempotent_id(rtype, key) if key else None
        if existing is not None:
            raise idempotent_conflict(existing)
        with engine.store.transaction():
            data = CREATORS[rtype](engine, params)
            if key:
                engine.store.remember_key(rtype, key, data["id"])
        return web.json_response({rtype: data}, status=201)

    routes = [web.get(f"/{rtype}", list_), web.get(f"/{rtype}/{{id}}", get)]
    if rtype != "events":
        routes.append(web.put(f"/{rtype}/{{id}}", put))
    if rtype in CREATORS:
        routes.append(web.post(f"/{rtype}", create))
    return routes


async def action(request: web.Request) -> web.Response:
    """``POST /{payments|mandates}/{id}/actions/{cancel|retry}`` (body ``{"data": {...}}``)."""
    rtype, name, rid = (request.match_info[k] for k in ("rtype", "action", "id"))
    if (rtype, name) not in ACTIONS:
        raise web.HTTPNotFound()
    engine = request.app[ENGINE]
    record = engine.store.get(rtype, rid)
    if record is None:
        raise not_found(rtype, rid)
    data = (await _body(request)).get("data") or {}
    metadata = dict(data.get("metadata") or {}) if isinstance(data, dict) else {}
    if rtype == "mandates":
        engine.cancel_mandate(record, metadata)
    elif name == "cancel":
        engine.cancel_payment(record, metadata)
    else:
        engine.retry_payment(record, metadata)
    return web.json_response({rtype: record.data})


async def disable_bank_account(request: web.Request) -> web.Response:
    store = request.app[ENGINE].store
    record = store.get("customer_bank_accounts", request.match_info["id"])
    if record is None:
        raise not_found("customer_bank_accounts", request.match_info["id"])
    record.data["enabled"] = False
    store.save(record)
    return web.json_response({"customer_bank_accounts": record.data})


async def bank_details_lookup(request: web.Request) -> web.Response:
    params = await _envelope(request, "bank_details_lookups")
    return web.json_response({"bank_details_lookups": lookup_bank_details(params)})


def build_app(store: Store, settings: SandboxSettings | None = None) -> web.Application:
    """The aiohttp application over an open store (the caller owns the store)."""
    app = web.Application(middlewares=[gocardless_errors])
    app[SETTINGS] = settings or SandboxSettings()
    app[ENGINE] = Engine(store, app[SETTINGS].step_ms)
    app[DELIVERY_LOCK] = asyncio.Lock()
    app[FAULTS] = Faults()
    for rtype in EQUALITY:
        app.add_routes(resource_routes(rtype))
    app.add_routes(
        [
            web.post("/customer_bank_accounts/{id}/actions/disable", disable_bank_account),
            web.post("/{rtype}/{id}/actions/{action}", action),
            web.post("/bank_details_lookups", bank_details_lookup),
            *admin_routes(),
        ]
    )

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.extend([session_ctx, background])
    return app


__all__ = ["SandboxSettings", "build_app"]
