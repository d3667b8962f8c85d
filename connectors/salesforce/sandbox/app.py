"""The REST routes: Salesforce's URL shapes, status codes and error bodies over :class:`Org`.

One middleware does what every real API call goes through — session check, API accounting with
``Sforce-Limit-Info``, injected latency and outages — so handlers only translate HTTP to org calls.
Admin routes (``/_sandbox/...``, see ``admin.py``) bypass it: they must not skew API counts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import composite
from .faults import Faults, Usage
from .org import Org
from .schema import ApiError

API = r"/services/data/v{version:\d+\.\d+}"
S = "{slash:/?}"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class State:
    """Everything the routes share: the org, the fault knobs and the API usage counter."""

    org: Org
    faults: Faults
    usage: Usage


STATE = web.AppKey("state", State)
USER = web.RequestKey("user", str)


def _state(request: web.Request) -> State:
    return request.app[STATE]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected request body: {err}") from None


def _user(request: web.Request) -> str:
    return request[USER]


def _version(request: web.Request) -> str:
    return request.match_info.get("version", "59.0")


def _batch_size(request: web.Request) -> int | None:
    return _batch_size_of(request.headers)


def _batch_size_of(headers: Mapping[str, str]) -> int | None:
    options = next((v for k, v in headers.items() if k.lower() == "sforce-query-options"), "")
    for part in options.split(","):
        key, _, value = part.strip().partition("=")
        if key.lower() == "batchsize" and value.isdigit():
            return max(200, min(2000, int(value)))
    return None


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, accounting, fault injection and Salesforce-shaped errors for every API call."""
    if request.path.startswith("/_sandbox"):
        return await handler(request)
    state = _state(request)
    response: web.StreamResponse
    try:
        if state.faults.latency_ms:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = state.org.user_for(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
        if user is None:
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        request[USER] = user
        state.usage.used += 1
        if state.usage.used > state.usage.limit:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        outage = state.faults.take_unavailable(request.method, request.path)
        if outage is not None:
            raise outage
        response = await handler(request)
    except ApiError as err:
        if err.status == 300:
            response = _json([err.message], status=300)
        else:
            response = _json(err.body(), status=err.status)
    except web.HTTPMethodNotAllowed as exc:
        body = [
            {
                "message": f"HTTP Method '{exc.method}' not allowed. Allowed are "
                f"{','.join(sorted(exc.allowed_methods))}",
                "errorCode": "METHOD_NOT_ALLOWED",
            }
        ]
        response = _json(body, status=405)
    except web.HTTPNotFound:
        body = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
        response = _json(body, status=404)
    response.headers["Sforce-Limit-Info"] = state.usage.header()
    return response


# --- discovery and limits ----------------------------------------------------------------------


async def versions(request: web.Request) -> web.Response:
    """``GET /services/data``: the API versions on offer."""
    return _json(
        [
            {"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
            for v in ("57.0", "58.0", "59.0", "60.0")
        ]
    )


async def resources(request: web.Request) -> web.Response:
    """``GET /services/data/vXX.X``: the resources this sandbox implements."""
    base = f"/services/data/v{_version(request)}"
    names = ("sobjects", "query", "queryAll", "composite", "limits")
    return _json({name: f"{base}/{name}" for name in names})


async def limits(request: web.Request) -> web.Response:
    """``GET /limits``: DailyApiRequests from the sandbox's usage counter."""
    usage = _state(request).usage
    return _json(
        {
            "DailyApiRequests": {"Max": usage.limit, "Remaining": max(0, usage.limit - usage.used)},
        }
    )


# --- sObjects ----------------------------------------------------------------------------------


async def global_describe(request: web.Request) -> web.Response:
    """``GET /sobjects``."""
    org = _state(request).org
    return _json(
        {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [o.basic_info() for o in org.objects.values()],
        }
    )


async def sobject_info(request: web.Request) -> web.Response:
    """``GET /sobjects/{obj}``: basic information about the object."""
    spec = _state(request).org.spec(request.match_info["obj"])
    return _json({"objectDescribe": spec.basic_info(), "recentItems": []})


async def describe(request: web.Request) -> web.Response:
    """``GET /sobjects/{obj}/describe``."""
    return _json(_state(request).org.spec(request.match_info["obj"]).describe())


async def create(request: web.Request) -> web.Response:
    """``POST /sobjects/{obj}``: 201 with the new id."""
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    rid = _state(request).org.create(request.match_info["obj"], body, _user(request))
    return _json({"id": rid, "success": True, "errors": []}, status=201)


async def record(request: web.Request) -> web.StreamResponse:
    """``GET/PATCH/DELETE /sobjects/{obj}/{id}``."""
    org = _state(request).org
    obj, rid = request.match_info["obj"], request.match_info["id"]
    if request.method == "GET":
        return _json(org.read(obj, rid, _version(request), request.query.get("fields")))
    if request.method == "DELETE":
        org.delete(obj, rid)
        return web.Response(status=204)
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    org.update(obj, rid, body, _user(request))
    return web.Response(status=204)


async def by_external_id(request: web.Request) -> web.StreamResponse:
    """``GET/PATCH/DELETE /sobjects/{obj}/{extIdField}/{value}`` (PATCH is upsert).

    Like API v46.0+: 201 with ``created: true`` for a new record, 200 with ``created: false``
    for an update (older versions answer an update with 204 and no body).
    """
    org = _state(request).org
    obj, field, value = (request.match_info[k] for k in ("obj", "field", "value"))
    version = _version(request)
    if request.method == "GET":
        return _json(org.read_by_external_id(obj, field, value, version))
    if request.method == "DELETE":
        found = org.read_by_external_id(obj, field, value, version)
        org.delete(obj, found["Id"])
        return web.Response(status=204)
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    rid, created = org.upsert(obj, field, value, body, _user(request))
    if not created and float(version) < 46.0:
        return web.Response(status=204)
    return _json(
        {"id": rid, "success": True, "errors": [], "created": created},
        status=201 if created else 200,
    )


# --- SOQL --------------------------------------------------------------------------------------


async def query(request: web.Request) -> web.Response:
    """``GET /query?q=SOQL`` (and ``/queryAll``: there is no recycle bin, so the same)."""
    text = request.query.get("q")
    if not text:
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    org = _state(request).org
    return _json(org.query(text, _version(request), _batch_size(request)))


async def tooling_query(request: web.Request) -> web.Response:
    """``GET /tooling/query?q=SOQL``: the org's validation rules (see ``setup_rules.py``)."""
    text = request.query.get("q")
    if not text:
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    return _json(_state(request).org.setup_rules.tooling_query(text))


async def query_more(request: web.Request) -> web.Response:
    """``GET /query/{locator}``: next page."""
    org = _state(request).org
    return _json(
        org.query_more(request.match_info["locator"], _version(request), _batch_size(request))
    )


# --- sObject Collections -----------------------------------------------------------------------


async def collections(request: web.Request) -> web.Response:
    """``POST`` (create), ``PATCH`` (update), ``DELETE`` (``?ids=``) ``/composite/sobjects``."""
    org = _state(request).org
    if request.method == "DELETE":
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        all_or_none = request.query.get("allOrNone", "false").lower() == "true"
        return _json(composite.delete_collection(org, ids, all_or_none))
    body = await _body(request)
    return _json(
        composite.save_collection(org, body, _user(request), creating=request.method == "POST")
    )


async def upsert_many(request: web.Request) -> web.Response:
    """``PATCH /composite/sobjects/{obj}/{field}``: upsert up to 200 records by external id."""
    org, m = _state(request).org, request.match_info
    body = await _body(request)
    return _json(composite.upsert_collection(org, m["obj"], m["field"], body, _user(request)))


async def retrieve_many(request: web.Request) -> web.Response:
    """``GET /composite/sobjects/{obj}?ids=..&fields=..`` or ``POST`` with the same as JSON."""
    org = _state(request).org
    if request.method == "POST":
        body = await _body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected {ids: [...], fields: [...]}")
        ids = [str(i) for i in body.get("ids", [])]
        fields = ",".join(str(f) for f in body.get("fields", []))
    else:
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        fields = request.query.get("fields", "")
    return _json(
        composite.retrieve_many(org, request.match_info["obj"], ids, fields, _version(request))
    )


def add_api_routes(app: web.Application) -> None:
    """Register the REST API routes (order matters: ``describe`` before ``{id}``)."""
    from .composite_api import composite_request

    r = app.router
    r.add_get("/services/data" + S, versions)
    r.add_get(API + S, resources)
    r.add_get(API + "/limits" + S, limits)
    r.add_get(API + "/sobjects" + S, global_describe)
    r.add_get(API + "/sobjects/{obj}" + S, sobject_info)
    r.add_post(API + "/sobjects/{obj}" + S, create)
    r.add_get(API + "/sobjects/{obj}/describe" + S, describe)
    for method in ("GET", "PATCH", "DELETE"):
        r.add_route(method, API + "/sobjects/{obj}/{id}" + S, record)
        r.add_route(method, API + "/sobjects/{obj}/{field}/{value}" + S, by_external_id)
    for endpoint in ("query", "queryAll"):
        r.add_get(API + f"/{endpoint}" + S, query)
        r.add_get(API + f"/{endpoint}/{{locator}}" + S, query_more)
    r.add_get(API + "/tooling/query" + S, tooling_query)
    r.add_post(API + "/composite" + S, composite_request)  # composite_api.py
    for method in ("POST", "PATCH", "DELETE"):
        r.add_route(method, API + "/composite/sobjects" + S, collections)
    for method in ("GET", "POST"):
        r.add_route(method, API + "/composite/sobjects/{obj}" + S, retrieve_many)
    r.add_patch(API + "/composite/sobjects/{obj}/{field}" + S, upsert_many)


def build_app(state: State) -> web.Application:
    """The aiohttp application serving the API and the admin endpoints."""
    from .admin import add_admin_routes

    app = web.Application(middlewares=[api_middleware], client_max_size=32 * 1024**2)
    app[STATE] = state
    add_api_routes(app)
    add_admin_routes(app)
    return app
