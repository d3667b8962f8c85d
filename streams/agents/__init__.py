"""The worker's stages (Faust agents, tables, timers, web views), attached by role.

One worker process may run every role (the embedded default) or a subset (production scales
each by partitions: ``paybus worker --role sequencer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.web import Request, Response, View

from streams import health, metrics
from streams.app import PaybusApp

ROLES = ("sequencer", "router", "connectors", "normaliser", "web", "retry", "crm", "ops")


def check_roles(roles: Iterable[str]) -> list[str]:
    """``roles`` as a list, or ValueError naming the unknown ones; the CLI calls it before it
    touches Kafka, so a typo in ``--role`` creates no topics."""
    wanted = list(roles)
    unknown = sorted(set(wanted) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    return wanted


def attach(app: PaybusApp, roles: Iterable[str] = ROLES) -> dict[str, Any]:
    """Attach the stages named in ``roles`` to ``app``; return them by role."""
    stages: dict[str, Any] = {}
    wanted = check_roles(roles)
    if "sequencer" in wanted:
        from streams.agents.sequencer import SequencerStage

        stages["sequencer"] = SequencerStage(app)
    psps = sorted({g.connector for g in app.settings.gateways})
    if "router" in wanted:
        from streams.agents.router import RouterStage

        stages["router"] = RouterStage(app)
    if "connectors" in wanted:
        from streams.agents.commands import CommandStage

        stages["connectors"] = CommandStage(app, psps)
    if "normaliser" in wanted:
        from streams.agents.normaliser import NormaliserStage

        stages["normaliser"] = NormaliserStage(app)
    if "web" in wanted:
        from streams.agents.webhooks import WebhookReceiver

        stages["web"] = WebhookReceiver(app, psps)
        from streams.agents.bank_details import BankDetailsStage

        stages["bank_details"] = BankDetailsStage(app)
        from streams.pages import PaymentPages

        stages["pages"] = PaymentPages(app)
    if "retry" in wanted:
        from streams.agents.retry import RetryStage

        stages["retry"] = RetryStage(app)
    if "crm" in wanted:
        from streams.agents.crm import CrmStage

        stages["crm"] = CrmStage(app)
    if "ops" in wanted:
        from streams.agents.ops import OpsStage

        stages["ops"] = OpsStage(app, psps)
        from streams.agents.backfill import BackfillStage

        stages["backfill"] = BackfillStage(app, psps)
    from streams import metrics

    metrics.expect_dead_letters(
        "decode"
    )  # every worker's topics dead-letter what they cannot decode
    _attach_metrics_view(app)
    health.attach(app)
    _attach_lag_collector(app)
    if "ops" in wanted:
        from streams.agents.dlq import DlqStage

        stages["dlq"] = DlqStage(app)
    return stages


def _attach_lag_collector(app: PaybusApp) -> None:
    """Consumer lag of the partitions this worker owns, refreshed off the event loop.

    Series follow the current assignment, so a partition that moved to another worker after a
    rebalance stops being reported here (stale gauges would keep lag alerts firing).
    """
    import asyncio

    from prometheus_client import REGISTRY

    from streams.lag import Source
    from streams.lag_metrics import ConsumerLagCollector, kafka_reader

    names = {spec.name for spec in app.topic_map.all()}

    def owned() -> list[Any]:
        try:
            return [tp for tp in app.consumer.assignment() if tp.topic in names]
        except Exception:  # consumer not started yet
            return []

    # PAYBUS_END_OFFSETS (by profile: fetch on Tansu, ListOffsets on Apache Kafka); the
    # collector used to fetch whatever the setting said.
    source: Source = "fetch" if app.settings.effective_end_offsets == "fetch" else "list_offsets"
    collector = ConsumerLagCollector(
        app.conf.id,
        owned,
        kafka_reader(app.settings.bootstrap_servers, source),
        refresh_on_collect=False,
    )
    REGISTRY.register(collector)

    @app.timer(app.settings.lag_refresh_s, name="paybus.lag.refresh")  # type: ignore[untyped-decorator]
    async def refresh_lag() -> None:
        await asyncio.get_running_loop().run_in_executor(None, collector.refresh)


def _attach_metrics_view(app: PaybusApp) -> None:
    @app.page("/metrics")
    class Metrics(View):
        """Prometheus exposition of this worker's metrics."""

        async def get(self, request: Request) -> Response:
            body, content_type = metrics.render()
            return self.bytes(body, content_type=content_type.split(";")[0])
