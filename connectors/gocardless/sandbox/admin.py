"""``/_sandbox/...`` admin routes: drive the clock, script outcomes, push webhooks.

They exist so tests never sleep: a test advances the world and triggers delivery with one
synchronous HTTP call each, and gets back exactly what happened.

- ``GET  /_sandbox/health``          -> ``{"ok": true, "now": ...}``
- ``GET  /_sandbox/clock``           -> ``{"now": ...}``
- ``POST /_sandbox/advance``         body ``{}`` or ``{"steps": n}`` (every non-final object
  moves n steps now), or ``{"to": "<ISO time>"}`` / ``{"days": d, "hours": h}`` (time moves
  forward and every step due by then happens at its due time; each status lasts one
  ``step`` - a day by default) -> ``{"now": ..., "events": [...]}``
- ``POST /_sandbox/outcomes/{id}``   body ``{"outcome": "failed"}`` for a PM/MD/RF id
  (payments: success, failed, late_failure, charged_back; mandates and refunds: success,
  failed) -> the resource. Also settable at creation with metadata ``sandbox_outcome``.
- ``GET  /_sandbox/webhooks``        -> the webhook config
- ``POST /_sandbox/webhooks``        body: any of url, secret, batch_size, shuffle,
  duplicate_rate, drop_rate, seed (merged into the current config) -> the config
- ``POST /_sandbox/deliver_webhooks``-> what was sent: batches (ids, raw body, signature,
  receiver's status) and the ids dropped
- ``GET  /_sandbox/outbox``          -> ids of events not yet delivered
- ``POST|GET|DELETE /_sandbox/faults`` -> arm, list, disarm injected API failures (``faults``)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from . import webhooks
from .clock import DAY_MS, format_ms, parse_time
from .errors import api_usage, invalid_state, not_found
from .state import DELIVERY_LOCK, ENGINE, FAULTS, SESSION, SETTINGS
from .store import Json

log = logging.getLogger(__name__)
PREFIX_TYPE = {"PM": "payments", "MD": "mandates", "RF": "refunds"}


async def _json(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise api_usage(400, "invalid_json", "The request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise api_usage(400, "invalid_document_structure", "The body must be a JSON object")
    return body


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "now": format_ms(request.app[ENGINE].clock.now_ms())})


async def advance(request: web.Request) -> web.Response:
    body = await _json(request)
    engine = request.app[ENGINE]
    now = engine.clock.now_ms()
    to_ms: int | None = None
    try:
        if "to" in body:
            to_ms = parse_time(str(body["to"]))
        elif "days" in body or "hours" in body:
            span = float(body.get("days", 0)) * DAY_MS + float(body.get("hours", 0)) * 3_600_000
            to_ms = now + int(span)
        steps = int(body.get("steps", 1))
    except (TypeError, ValueError) as exc:
        raise api_usage(400, "invalid_advance", f"Bad advance request: {exc}") from exc
    if to_ms is not None and to_ms < now:
        raise invalid_state(
            "clock_cannot_go_back", f"The sandbox clock is already at {format_ms(now)}"
        )
    if not 0 <= steps <= 1000:
        raise api_usage(400, "invalid_advance", "steps must be between 0 and 1000")
    events = engine.advance(steps=steps, to_ms=to_ms)
    return web.json_response({"now": format_ms(engine.clock.now_ms()), "events": events})


async def set_outcome(request: web.Request) -> web.Response:
    rid = request.match_info["id"]
    rtype = PREFIX_TYPE.get(rid[:2], "")
    engine = request.app[ENGINE]
    record = engine.store.get(rtype, rid) if rtype else None
    if record is None:
        raise not_found(rtype or "resources", rid)
    engine.set_outcome(record, str((await _json(request)).get("outcome")))
    return web.json_response({rtype: record.data, "outcome": record.outcome})


async def get_webhooks(request: web.Request) -> web.Response:
    return web.json_response(webhooks.load_config(request.app[ENGINE].store).to_json())


async def set_webhooks(request: web.Request) -> web.Response:
    store = request.app[ENGINE].store
    merged = {**webhooks.load_config(store).to_json(), **(await _json(request))}
    try:
        config = webhooks.WebhookConfig.from_json(merged)
    except (TypeError, ValueError) as exc:
        raise api_usage(400, "invalid_webhook_config", str(exc)) from exc
    store.set_setting(webhooks.SETTINGS_KEY, config.to_json())
    return web.json_response(config.to_json())


async def deliver(request: web.Request) -> web.Response:
    async with request.app[DELIVERY_LOCK]:
        report = await webhooks.deliver(request.app[ENGINE].store, request.app[SESSION])
    return web.json_response(report)


async def outbox(request: web.Request) -> web.Response:
    return web.json_response({"event_ids": [e["id"] for e in request.app[ENGINE].store.outbox()]})


async def add_fault(request: web.Request) -> web.Response:
    fault = request.app[FAULTS].add(await _json(request))
    return web.json_response(dataclasses.asdict(fault))


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].to_json())


async def clear_faults(request: web.Request) -> web.Response:
    request.app[FAULTS].clear()
    return web.json_response(request.app[FAULTS].to_json())


def admin_routes() -> list[web.RouteDef]:
    return [
        web.get("/_sandbox/health", health),
        web.get("/_sandbox/clock", health),
        web.post("/_sandbox/advance", advance),
        web.post("/_sandbox/outcomes/{id}", set_outcome),
        web.get("/_sandbox/webhooks", get_webhooks),
        web.post("/_sandbox/webhooks", set_webhooks),
        web.post("/_sandbox/deliver_webhooks", deliver),
        web.get("/_sandbox/outbox", outbox),
        web.post("/_sandbox/faults", add_fault),
        web.get("/_sandbox/faults", list_faults),
        web.delete("/_sandbox/faults", clear_faults),
    ]


async def background(app: web.Application) -> AsyncIterator[None]:
    """Optional periodic advance and webhook delivery for a long-running demo sandbox."""
    settings = app[SETTINGS]

    async def every(seconds: float, work: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                log.exception("sandbox background task failed")

    async def tick() -> None:
        app[ENGINE].advance()

    async def push() -> None:
        async with app[DELIVERY_LOCK]:
            await webhooks.deliver(app[ENGINE].store, app[SESSION])

    tasks = []
    if settings.auto_advance_seconds:
        tasks.append(asyncio.create_task(every(settings.auto_advance_seconds, tick)))
    if settings.auto_deliver_seconds:
        tasks.append(asyncio.create_task(every(settings.auto_deliver_seconds, push)))
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
