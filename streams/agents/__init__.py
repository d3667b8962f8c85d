"""The worker's stages (Faust agents, tables, timers, web views), attached by role.

One worker process may run every role (the embedded default) or a subset (production scales
each by partitions: ``paybus worker --role sequencer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.web import Request, Response, View

from streams import metrics
from streams.app import PaybusApp

ROLES = ("sequencer",)


def attach(app: PaybusApp, roles: Iterable[str] = ROLES) -> dict[str, Any]:
    """Attach the stages named in ``roles`` to ``app``; return them by role."""
    stages: dict[str, Any] = {}
    wanted = list(roles)
    unknown = sorted(set(wanted) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    if "sequencer" in wanted:
        from streams.agents.sequencer import SequencerStage

        stages["sequencer"] = SequencerStage(app)
    _attach_metrics_view(app)
    return stages


def _attach_metrics_view(app: PaybusApp) -> None:
    @app.page("/metrics")
    class Metrics(View):
        """Prometheus exposition of this worker's metrics."""

        async def get(self, request: Request) -> Response:
            body, content_type = metrics.render()
            return self.bytes(body, content_type=content_type.split(";")[0])
