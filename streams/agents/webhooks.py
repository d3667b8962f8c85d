"""Webhook receiver: ``POST /webhooks/{psp}``, verified raw bodies onto ``paybus.psp.webhooks``.

The receiver answers 2xx only once the verified raw body is durably in Kafka (acks=all), so a
PSP that got a 2xx can forget the event; a bad or missing signature is a 400 and nothing is
published; an unknown PSP is a 404, an oversized body a 413, a request labelled with the
content type of paybus's own link records a 415 (see :meth:`WebhookReceiver.receive`), and a
broker that cannot take the record a 503 (the PSP retries later).

It does nothing else: mapping webhooks onto events is the normaliser's job
(:mod:`streams.agents.normaliser`), in the workers. The receiver is the one part of the bus
the PSPs wait on, so it runs in processes of its own (the ``web`` role) that stream
processing cannot slow down.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, cast

from faust.web import Request, Response, View

from connectors.base import VerifiedWebhook
from connectors.errors import UnknownConnectorError, WebhookVerificationError
from streams import metrics
from streams.agents.batch_send import BatchSender
from streams.agents.commands import LINK_CONTENT_TYPE
from streams.agents.common import Connectors
from streams.agents.http_body import read_body
from streams.app import PaybusApp
from streams.faust_codec import FaustAvroCodec

log = logging.getLogger(__name__)
#: Request headers kept on the record (for audit; the body is what the normaliser reads).
_KEPT_HEADERS = ("content-type", "stripe-signature", "webhook-signature", "user-agent")


#: Stored beside a body that is not the one the PSP signed (``VerifiedWebhook.altered``).
ALTERED_HEADER = "x-paybus-body-altered"


def _headers(kept: dict[str, str], unit: VerifiedWebhook) -> dict[str, str]:
    """The request headers kept with one unit, saying when its body is not the signed one."""
    return kept if unit.altered is None else {**kept, ALTERED_HEADER: unit.altered}


class WebhookReceiver:
    """The ``POST /webhooks/{psp}`` view of the ``web`` role (see the module doc)."""

    def __init__(self, app: PaybusApp, psps: list[str]) -> None:
        self.app = app
        self.psps = set(psps)
        self.connectors = Connectors(app)
        self.webhooks_topic = app.topic_map.psp_webhooks.name
        self.sender = BatchSender(app)
        self.webhook_codec = FaustAvroCodec(app.avro, "PspWebhook")
        self._attach_view()

    def _attach_view(self) -> None:
        stage = self

        @self.app.page("/webhooks/{psp}")
        class Webhooks(View):
            """POST /webhooks/{psp}: verify, publish durably, then answer."""

            async def post(self, request: Request, psp: str) -> Response:
                return await stage.receive(self, request, psp)

    async def receive(self, view: View, request: Request, psp: str) -> Response:
        limit = self.app.settings.webhook_max_body_bytes
        if psp not in self.psps:
            metrics.WEBHOOKS.labels("unknown", "not_found").inc()
            return view.json({"error": f"unknown PSP {psp!r}"}, status=404)
        raw = cast(Any, request)
        if raw.content_type == LINK_CONTENT_TYPE:  # aiohttp's: lowercased, no parameters
            # The record keeps the request's Content-Type, which no PSP signs, and the normaliser
            # takes records so labelled for a connector worker's link (PSP object -> payment):
            # a signed webhook replayed under this label re-pointed its object to nothing, and
            # the payment's later webhooks went to the DLQ.
            metrics.WEBHOOKS.labels(psp, "bad_content_type").inc()
            return view.json(
                {"error": f"Content-Type {LINK_CONTENT_TYPE} is paybus's own, not a PSP's"},
                status=415,
            )
        if raw.content_length is not None and raw.content_length > limit:
            metrics.WEBHOOKS.labels(psp, "too_large").inc()
            return view.json({"error": f"body over {limit} bytes"}, status=413)
        body = await read_body(raw.content, limit)
        if body is None:
            metrics.WEBHOOKS.labels(psp, "too_large").inc()
            return view.json({"error": f"body over {limit} bytes"}, status=413)
        headers = {k.lower(): v for k, v in raw.headers.items()}
        try:
            verified = self.connectors.get(psp).verify_webhook(body, headers)
        except WebhookVerificationError as exc:
            metrics.WEBHOOKS.labels(psp, "bad_signature").inc()
            return view.json({"error": str(exc)}, status=400)
        except UnknownConnectorError as exc:
            return view.json({"error": str(exc)}, status=404)
        kept = {k: v for k, v in headers.items() if k in _KEPT_HEADERS}
        now = datetime.now(UTC)
        try:
            futures = [
                await self.sender.send_one(
                    self.webhooks_topic,
                    unit.psp_object_id.encode(),
                    self.webhook_codec.dumps(
                        {
                            "webhook_id": unit.webhook_id,
                            "psp": psp,
                            "psp_object_id": unit.psp_object_id,
                            "received_at": now,
                            "content_type": headers.get("content-type", "application/json"),
                            "body": unit.body,
                            "headers": _headers(kept, unit),
                        }
                    ),
                )
                for unit in verified
            ]
            timeout = self.app.settings.webhook_publish_timeout_s
            await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout)
        except Exception as exc:  # the broker is down or refused: the PSP must retry
            log.warning("webhook from %s not published: %r", psp, exc)
            metrics.WEBHOOKS.labels(psp, "unavailable").inc()
            return view.json({"error": "cannot store the webhook now; retry"}, status=503)
        metrics.WEBHOOKS.labels(psp, "accepted").inc(len(verified))
        return view.json({"accepted": len(verified)})
