"""A Faust worker for the foundation test: records what its agent receives, as JSON lines.

Run as a subprocess with the PAYBUS_* environment and ``ECHO_OUT`` naming the output file.
"""

from __future__ import annotations

import json
import os

import faust

from streams.app import build_app
from streams.records import CrmChange
from streams.settings import Settings

settings = Settings()
app = build_app(settings)
topic = app.topic(
    app.topic_map.crm_changes.name, key_type=str, key_serializer="raw", value_type=CrmChange
)
out_path = os.environ["ECHO_OUT"]


@app.agent(topic)
async def echo(stream: faust.StreamT[CrmChange]) -> None:
    async for event in stream.events():
        value = event.value
        line = {
            "type": type(value).__name__,
            "key": event.key,
            "partition": event.message.partition,
            "offset": event.message.offset,
            "change_id": value.change_id,
            "amount_minor": value.amount_minor,
            "occurred_at": value.occurred_at.isoformat(),
        }
        with open(out_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


@app.page("/metrics")
async def ready(web, request):  # type: ignore[no-untyped-def]
    return web.text("ok")


if __name__ == "__main__":
    faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
