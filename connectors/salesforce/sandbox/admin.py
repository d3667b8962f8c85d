"""Admin endpoints under ``/_sandbox``: faults, usage, raw records, seeding.

These are the test and demo hooks. They need no session, do not count against the API
allowance and are never subject to injected faults, so a test can always observe and reset the
sandbox even while it is "down". The server binds loopback only, which is the whole access
control.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .app import STATE, State
from .faults import Unavailable, ValidationRule
from .schema import ApiError, user_id
from .setup_rules import SetupRule

PREFIX = "/_sandbox"


def _state(request: web.Request) -> State:
    return request.app[STATE]


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as err:
        raise ApiError(400, "JSON_PARSER_ERROR", str(err)) from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


@web.middleware
async def admin_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Render ApiError from admin handlers the same way the API does."""
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as err:
        return web.json_response(err.body(), status=err.status)
    return response


async def health(request: web.Request) -> web.Response:
    """``GET /_sandbox/health``: liveness for scripts that start the CLI."""
    return web.json_response({"ok": True})


async def state(request: web.Request) -> web.Response:
    """``GET /_sandbox/state``: users, usage, faults, page size and record counts."""
    st = _state(request)
    org = st.org
    return web.json_response(
        {
            "users": users_json(st),
            "usage": st.usage.to_json(),
            "faults": st.faults.to_json(),
            "page_size": org.cursors.page_size,
            "counts": {o.name: org.store.count(o.name) for o in org.objects.values()},
        }
    )


def users_json(st: State) -> dict[str, dict[str, str]]:
    """User name -> {id, token} for every configured session."""
    return {
        name: {"id": uid, "token": token}
        for token, uid in st.org.tokens.items()
        for name in [st.org.usernames[uid]]
    }


async def users(request: web.Request) -> web.Response:
    """``GET /_sandbox/users``."""
    return web.json_response(users_json(_state(request)))


async def usage(request: web.Request) -> web.Response:
    """``GET`` reads, ``DELETE`` resets, ``PUT`` sets ``{used?, limit?}`` of the API counter."""
    counter = _state(request).usage
    if request.method == "DELETE":
        counter.used = 0
    elif request.method == "PUT":
        body = await _body(request)
        counter.used = int(body.get("used", counter.used))
        counter.limit = int(body.get("limit", counter.limit))
    return web.json_response(counter.to_json())


async def writes(request: web.Request) -> web.Response:
    """``GET`` every record save since start (``[seconds, object, id]``, oldest first, from
    index ``?since=N``), ``DELETE`` forgets them."""
    log = _state(request).org.writes
    if request.method == "DELETE":
        log.clear()
        return web.json_response({"writes": []})
    since = int(request.query.get("since", "0"))
    return web.json_response({"writes": list(log)[since:]})


async def faults(request: web.Request) -> web.Response:
    """``GET`` lists, ``DELETE`` clears every injected fault."""
    knobs = _state(request).faults
    if request.method == "DELETE":
        knobs.clear()
    return web.json_response(knobs.to_json())


async def unavailable(request: web.Request) -> web.Response:
    """``POST {count, status?, errorCode?, message?, path?, method?}``: next calls fail."""
    body = await _body(request)
    fault = Unavailable(
        count=int(body.get("count", 1)),
        status=int(body.get("status", 503)),
        error_code=str(body.get("errorCode", "SERVER_UNAVAILABLE")),
        message=str(body.get("message", Unavailable.message)),
        path_contains=body.get("path"),
        method=body.get("method"),
    )
    _state(request).faults.unavailable.append(fault)
    return web.json_response(_state(request).faults.to_json())


async def latency(request: web.Request) -> web.Response:
    """``POST {ms}``: added latency for every API call (0 turns it off)."""
    body = await _body(request)
    _state(request).faults.latency_ms = max(0, int(body.get("ms", 0)))
    return web.json_response(_state(request).faults.to_json())


async def rules(request: web.Request) -> web.Response:
    """``POST {object?, field, equals | id, errorCode?, message?, times?}`` adds a validation
    rule; ``DELETE`` removes them all."""
    knobs = _state(request).faults
    if request.method == "DELETE":
        knobs.rules.clear()
    else:
        knobs.rules.append(ValidationRule.from_json(await _body(request)))
    return web.json_response(knobs.to_json())


async def validation_rules(request: web.Request) -> web.Response:
    """``POST {object, field, message, name?, active?, kind?}`` deploys a paybus rule on an
    object (replacing its earlier one of that name; ``kind`` ``grow_only``, the version guard,
    or ``no_create``), ``DELETE`` removes them all, ``GET`` lists them."""
    setup = _state(request).org.setup_rules
    if request.method == "DELETE":
        setup.clear()
    elif request.method == "POST":
        setup.deploy(SetupRule.from_json(await _body(request)))
    return web.json_response({"rules": setup.to_json()})


async def records(request: web.Request) -> web.Response:
    """``GET`` raw records of an object (SystemModstamp order), ``POST {records, as_user?}``
    seeds (system fields settable, rules skipped), ``DELETE`` wipes the object."""
    st = _state(request)
    spec = st.org.spec(request.match_info["obj"])
    if request.method == "POST":
        body = await _body(request)
        rows = body.get("records", [])
        if not isinstance(rows, list):
            raise ApiError(400, "JSON_PARSER_ERROR", "records must be a list")
        return web.json_response({"ids": st.org.seed(spec.name, rows, body.get("as_user"))})
    if request.method == "DELETE":
        return web.json_response({"deleted": st.org.store.wipe(spec.name)})
    return web.json_response({"records": st.org.store.all(spec.name)})


async def one_record(request: web.Request) -> web.Response:
    """``GET /_sandbox/records/{obj}/{id}``: one raw record, 404 when absent."""
    st = _state(request)
    spec = st.org.spec(request.match_info["obj"])
    found = st.org.store.get(spec.name, request.match_info["id"])
    if found is None:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
    return web.json_response(found)


async def wipe_all(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/records``: every record of every object (users stay)."""
    return web.json_response({"deleted": _state(request).org.store.wipe()})


async def user_lookup(request: web.Request) -> web.Response:
    """``GET /_sandbox/users/{name}``: the id a user name maps to (configured or not)."""
    return web.json_response({"id": user_id(request.match_info["name"])})


def add_admin_routes(app: web.Application) -> None:
    """Register ``/_sandbox/...``; wrap them in an error renderer of their own."""
    admin = web.Application(middlewares=[admin_errors])
    admin[STATE] = app[STATE]
    r = admin.router
    r.add_get("/health", health)
    r.add_get("/state", state)
    r.add_get("/users", users)
    r.add_get("/users/{name}", user_lookup)
    for method in ("GET", "PUT", "DELETE"):
        r.add_route(method, "/usage", usage)
    for method in ("GET", "DELETE"):
        r.add_route(method, "/faults", faults)
        r.add_route(method, "/writes", writes)
    r.add_post("/faults/unavailable", unavailable)
    r.add_post("/faults/latency", latency)
    for method in ("POST", "DELETE"):
        r.add_route(method, "/faults/rules", rules)
    for method in ("GET", "POST", "DELETE"):
        r.add_route(method, "/validation-rules", validation_rules)
    r.add_delete("/records", wipe_all)
    for method in ("GET", "POST", "DELETE"):
        r.add_route(method, "/records/{obj}", records)
    r.add_get("/records/{obj}/{id}", one_record)
    app.add_subapp(PREFIX, admin)
