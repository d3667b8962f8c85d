"""Faust's own ceiling: an agent that only consumes (and decodes) ``paybus.payments.events``.

Run as ``python -m streams.bench.faust_sink worker`` with the ``PAYBUS_*`` environment of a
bench worker. It is built by the same :func:`streams.app.build_app` and worker class as the
real worker (same transport, fetch wait, loggers, GC settings), so the gap between this and
the sequencing agent is the agent's own work. Its ``/metrics`` page speaks the same counter
as the real stages (``paybus_events_total{stage="sink"}``) plus the wall-clock times of the
first and latest event, so the bench reads it like any worker.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.app import build_app
from streams.records import PaymentEvent
from streams.settings import Settings

settings = Settings()
app = build_app(settings)
topic = app.topic(
    app.topic_map.payment_events.name, key_type=str, key_serializer="raw", value_type=PaymentEvent
)
_state = {"count": 0, "first": 0.0, "last": 0.0}


@app.agent(topic, name="paybus.bench.sink")
async def sink(stream: faust.StreamT[PaymentEvent]) -> AsyncIterator[None]:
    """Count each decoded event; no state, no output: the cheapest possible agent."""
    async for _event in stream.events():
        now = time.time()
        if not _state["count"]:
            _state["first"] = now
        _state["count"] += 1
        _state["last"] = now
        yield None


@app.page("/metrics")
class Metrics(View):
    """The counter and timestamps in Prometheus text format."""

    async def get(self, request: Request) -> Response:
        body = (
            f'paybus_events_total{{stage="sink"}} {_state["count"]}\n'
            f"bench_first_event_time {_state['first']:.6f}\n"
            f"bench_last_event_time {_state['last']:.6f}\n"
        )
        return self.text(body)


def main() -> Any:
    """Run the worker (Faust's own command line, quiet), with the real worker's start-up
    (its garbage-collector settings included), so only the agent differs."""
    from streams.cli.runtime import worker_class

    worker = worker_class(faust.Worker)(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    return worker.execute_from_commandline()


if __name__ == "__main__":
    main()
