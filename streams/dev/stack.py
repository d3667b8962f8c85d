"""The embedded stack: broker, PSP and CRM stand-ins, and a worker, all on loopback.

What ``paybus dev`` (``make run``) starts so a newcomer sees payments flow with no
credentials: the Tansu broker, localstripe (in process), the GoCardless and Salesforce
sandboxes (in process, SQLite in a temp folder), and one ``paybus worker`` subprocess with
every role, configured through ``PAYBUS_*`` to talk to the stand-ins; the PSPs' webhooks are
pointed at the worker's receiver. The Salesforce sandbox gets paybus's validation rules
(``deploy/salesforce``) and the worker uses them (``version_guard=rule``), as a production org
set up as recommended does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.processes import ChildProcess
from streams.settings import Settings
from streams.topics import TopicMap

STRIPE_KEY = "sk_test_paybus_dev"
STRIPE_SECRET = "whsec_paybus_dev"
GC_TOKEN = "gc_sandbox_token_dev"
GC_SECRET = "gc_webhook_secret_dev"
#: Pinned (not the settings default) so what ``paybus dev`` prints is what the worker checks.
CRM_INGEST_SECRET = "crm_ingest_secret_dev"


#: The worker's settings the CLI needs too (the rest are the worker's own business).
CLI_VARIABLES = (
    "PAYBUS_BOOTSTRAP_SERVERS",
    "PAYBUS_TOPIC_PREFIX",
    "PAYBUS_PARTITIONS",
    "PAYBUS_APP_ID",
    "PAYBUS_STRIPE__BASE_URL",
    "PAYBUS_STRIPE__API_KEY",
    "PAYBUS_GOCARDLESS__BASE_URL",
    "PAYBUS_GOCARDLESS__ACCESS_TOKEN",
    "PAYBUS_SALESFORCE__INSTANCE_URL",
    "PAYBUS_SALESFORCE__SESSION_ID",
    "PAYBUS_SALESFORCE__CA_BUNDLE",
)


@dataclass
class DevStack:
    """Everything ``paybus dev`` runs; a context manager that stops it all in reverse."""

    settings: Settings
    data_dir: Path
    web_port: int = 0
    broker: EmbeddedBroker | None = None
    loop_thread: Any = None
    localstripe: Any = None
    stripe_proxy: Any = None
    gocardless: Any = None
    salesforce: Any = None
    worker: ChildProcess | None = None
    _cms: list[Any] = field(default_factory=list)

    @property
    def topic_map(self) -> TopicMap:
        return TopicMap.from_settings(self.settings)

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def stripe_base_url(self) -> str:
        """Stripe's API as the worker sees it: localstripe behind the idempotency proxy."""
        return str(self.stripe_proxy.base_url)

    @property
    def worker_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.web_port}"

    def start(self) -> DevStack:
        from connectors.gocardless.sandbox import start_sandbox as start_gc
        from connectors.salesforce.sandbox import Sandbox as SalesforceSandbox
        from connectors.salesforce.settings import FieldMap
        from streams.dev.localstripe import LoopThread, start_localstripe
        from streams.dev.stripe_proxy import IdempotencyProxy

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_path=self.data_dir / "tansu.log").start()
        create_topics(self.bootstrap, self.topic_map.all())
        self.loop_thread = LoopThread()
        cm = start_localstripe(self.loop_thread, exclusive=False)
        self.localstripe = cm.__enter__()
        self._cms.append(cm)
        # localstripe ignores Idempotency-Key and refuses some documented fields; the proxy
        # gives it Stripe's semantics (see streams.dev.stripe_proxy).
        self.stripe_proxy = IdempotencyProxy(self.localstripe.base_url).start(self.loop_thread)
        self.web_port = self.web_port or free_port()
        self.gocardless = start_gc(
            db_path=str(self.data_dir / "gocardless.sqlite"),
            token=GC_TOKEN,
            webhook_url=f"{self.worker_url}/webhooks/gocardless",
            webhook_secret=GC_SECRET,
            webhook_options={"shuffle": True, "duplicate_rate": 0.3, "batch_size": 10, "seed": 7},
        )
        self.salesforce = SalesforceSandbox(db_path=self.data_dir / "salesforce.sqlite").start()
        # The org as deploy/salesforce leaves it: the worker runs the atomic, org-side guard.
        for mapping in FieldMap().objects():
            self.salesforce.admin.deploy_paybus_rules(mapping)
        self.localstripe.register_webhook(
            "paybus-dev", f"{self.worker_url}/webhooks/stripe", STRIPE_SECRET
        )
        self._start_worker()
        return self

    def worker_env(self) -> dict[str, str]:
        sf = self.salesforce
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYBUS_")}
        env.update(
            PAYBUS_BOOTSTRAP_SERVERS=self.bootstrap,
            PAYBUS_TOPIC_PREFIX=self.settings.topic_prefix,
            PAYBUS_APP_ID=self.settings.app_id,
            PAYBUS_PARTITIONS=str(self.settings.partitions),
            PAYBUS_WEB_HOST=self.settings.web_host,
            PAYBUS_WEB_PORT=str(self.web_port),
            PAYBUS_DATA_DIR=str(self.data_dir / "worker"),
            PAYBUS_HOLD_TIMEOUT_S="20",
            PAYBUS_LAG_REFRESH_S="2",
            PAYBUS_STRIPE__API_KEY=STRIPE_KEY,
            PAYBUS_STRIPE__WEBHOOK_SECRET=STRIPE_SECRET,
            PAYBUS_STRIPE__BASE_URL=self.stripe_base_url,
            PAYBUS_GOCARDLESS__ACCESS_TOKEN=GC_TOKEN,
            PAYBUS_GOCARDLESS__WEBHOOK_SECRET=GC_SECRET,
            PAYBUS_GOCARDLESS__BASE_URL=self.gocardless.base_url,
            PAYBUS_SALESFORCE__INSTANCE_URL=sf.instance_url,
            PAYBUS_SALESFORCE__SESSION_ID=sf.token_for("integration"),
            PAYBUS_SALESFORCE__CA_BUNDLE=str(sf.cert_path),
            PAYBUS_SALESFORCE__FLUSH_INTERVAL_S="0.3",
            PAYBUS_SALESFORCE__VERSION_GUARD="rule",
            PAYBUS_SALESFORCE__POLL_INTERVAL_S="1",
            PAYBUS_CRM__INTEGRATION_USERNAME="integration@paybus.sandbox",
            PAYBUS_CRM__INGEST_SECRET=CRM_INGEST_SECRET,
        )
        return env

    def cli_env(self) -> dict[str, str]:
        """What the CLI needs from :meth:`worker_env` to act on this stack from another shell:
        ``paybus crm check``, ``backfill`` and ``trace`` talk to the stand-ins, not to the
        real Stripe, GoCardless or a Salesforce org."""
        env = self.worker_env()
        return {name: env[name] for name in CLI_VARIABLES if name in env}

    def worker_settings(self) -> Settings:
        """The PSP side of the worker's configuration, for lookups from this process."""
        from pydantic import SecretStr

        from streams.settings import GoCardlessSettings, StripeSettings

        return self.settings.model_copy(
            update={
                "stripe": StripeSettings(
                    api_key=SecretStr(STRIPE_KEY),
                    webhook_secret=SecretStr(STRIPE_SECRET),
                    base_url=self.stripe_base_url,
                ),
                "gocardless": GoCardlessSettings(
                    access_token=SecretStr(GC_TOKEN),
                    webhook_secret=SecretStr(GC_SECRET),
                    base_url=self.gocardless.base_url,
                ),
            }
        )

    def _start_worker(self, timeout_s: float = 90.0) -> None:
        self.worker = ChildProcess(
            [sys.executable, "-m", "streams.cli", "worker"],
            self.worker_env(),
            self.data_dir / "worker.log",
        ).start()
        self.worker.wait_serving(timeout_s, RuntimeError)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(15)
        for stoppable in (self.salesforce, self.gocardless):
            if stoppable is not None:
                stoppable.stop()
        if self.stripe_proxy is not None:
            self.stripe_proxy.stop(self.loop_thread)
        for cm in reversed(self._cms):
            cm.__exit__(None, None, None)
        if self.loop_thread is not None:
            self.loop_thread.stop()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
