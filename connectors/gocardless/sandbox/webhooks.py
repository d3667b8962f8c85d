"""Webhook delivery: batches of events, signed like GoCardless, optionally misbehaving.

GoCardless POSTs ``{"events": [...], "meta": {"webhook_id": ...}}`` with header
``Webhook-Signature`` = hex HMAC-SHA256(secret, raw body). Real deliveries arrive out of order,
more than once, or not at all; the bus must cope, so the sandbox can do all three on purpose.
The choices come from ``random.Random(f"{seed}:{delivery_number}")``: the same scenario with
the same seed misbehaves identically on every run, and after a restart too, since the delivery
counter is persisted. A dropped event stays in ``GET /events``, where a backfill finds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import asdict, dataclass, field, fields

import aiohttp

from .store import Json, Store

SETTINGS_KEY = "webhooks"


@dataclass
class WebhookConfig:
    """Where and how events are delivered (persisted in the sandbox database)."""

    url: str | None = None
    secret: str = "sandbox-webhook-secret"
    batch_size: int = 50
    shuffle: bool = False
    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 0

    @classmethod
    def from_json(cls, data: Json) -> WebhookConfig:
        """Build from JSON, rejecting unknown keys and bad values with ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown webhook settings: {sorted(unknown)}")
        config = cls(**data)
        if config.batch_size < 1 or not 0 <= config.duplicate_rate <= 1:
            raise ValueError("batch_size must be >= 1 and duplicate_rate within [0, 1]")
        if not 0 <= config.drop_rate <= 1:
            raise ValueError("drop_rate must be within [0, 1]")
        return config

    def to_json(self) -> Json:
        return asdict(self)


def load_config(store: Store) -> WebhookConfig:
    saved = store.get_setting(SETTINGS_KEY)
    return WebhookConfig() if saved is None else WebhookConfig.from_json(saved)


def sign(secret: str, body: bytes) -> str:
    """The ``Webhook-Signature`` header value for a raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Plan:
    """What one delivery run sends: batches of events (with duplicates), and what it drops."""

    batches: list[list[Json]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def plan(events: list[Json], config: WebhookConfig, delivery_number: int) -> Plan:
    """Decide drops, duplicates and order for the pending events, deterministically."""
    rng = random.Random(f"{config.seed}:{delivery_number}")
    result = Plan()
    queue: list[Json] = []
    for event in events:
        if config.drop_rate and rng.random() < config.drop_rate:
            result.dropped.append(event["id"])
            continue
        queue.append(event)
        if config.duplicate_rate and rng.random() < config.duplicate_rate:
            queue.append(event)
    for start in range(0, len(queue), config.batch_size):
        batch = queue[start : start + config.batch_size]
        if config.shuffle:
            rng.shuffle(batch)
        result.batches.append(batch)
    return result


async def deliver(store: Store, session: aiohttp.ClientSession) -> Json:
    """Send every pending event now; returns a report of each batch sent.

    Without a configured URL the batches are only built and reported (and count as
    delivered), so tests can check signatures and order without running a receiver. A batch
    answered with a non-2xx status (or not at all) leaves its events pending for next time.
    """
    config = load_config(store)
    number = int(store.get_setting("webhook_deliveries") or 0) + 1
    store.set_setting("webhook_deliveries", number)
    work = plan(store.outbox(), config, number)
    report: list[Json] = []
    settled: set[str] = set(work.dropped)
    for index, batch in enumerate(work.batches):
        webhook_id = f"WB0{number:06d}{index:04d}"
        body = json.dumps({"events": batch, "meta": {"webhook_id": webhook_id}}).encode()
        signature = sign(config.secret, body)
        status, error = await _post(session, config.url, body, signature)
        if config.url is None or (status is not None and 200 <= status < 300):
            settled.update(e["id"] for e in batch)
        report.append(
            {
                "webhook_id": webhook_id,
                "event_ids": [e["id"] for e in batch],
                "status": status,
                "error": error,
                "body": body.decode(),
                "signature": signature,
            }
        )
    store.settle(sorted(settled))
    return {"delivery": number, "url": config.url, "batches": report, "dropped": work.dropped}


async def _post(
    session: aiohttp.ClientSession, url: str | None, body: bytes, signature: str
) -> tuple[int | None, str | None]:
    if url is None:
        return None, None
    headers = {
        "Content-Type": "application/json",
        "Webhook-Signature": signature,
        "User-Agent": "gocardless-webhook-service/1.1 (paybus sandbox)",
    }
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status, None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


__all__ = ["Plan", "WebhookConfig", "deliver", "load_config", "plan", "sign"]
