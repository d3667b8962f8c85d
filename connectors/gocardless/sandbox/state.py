"""Settings and typed application keys shared by the API and admin routes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .clock import DAY_MS
from .faults import Faults
from .lifecycle import Engine


@dataclass
class SandboxSettings:
    """Runtime knobs that are not persisted (the webhook config is, see ``webhooks``).

    ``auto_advance_seconds`` / ``auto_deliver_seconds`` make a long-running demo sandbox move
    objects on and push webhooks by itself; tests leave them off and drive both through the
    admin routes, so nothing depends on timing.
    """

    token: str = "sandbox_token"
    admin_token: str | None = None
    step_ms: int = DAY_MS
    auto_advance_seconds: float | None = None
    auto_deliver_seconds: float | None = None


ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", SandboxSettings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
DELIVERY_LOCK = web.AppKey("delivery_lock", asyncio.Lock)
FAULTS = web.AppKey("faults", Faults)
