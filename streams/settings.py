"""The one settings model of a paybus process.

Built once (``Settings()`` reads ``PAYBUS_*`` from the environment, nested sections with
``__``, e.g. ``PAYBUS_STRIPE__API_KEY``), frozen, and passed down. Nothing in paybus reads the
environment at import time: the CLI builds the model and hands it to whatever it starts.

Two profiles:

* ``embedded`` (the default, what ``make run`` and the tests use): one Tansu broker on
  loopback. Tansu makes group joins wait about half the session timeout and cannot run
  aiokafka's idempotent producer, so this profile uses a short session timeout and
  at-least-once processing; exactly-once outcomes come from the bus's own idempotence.
* ``production``: Apache Kafka; Kafka-default timeouts, replication factor 3 by default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.routing import DEFAULT_GATEWAYS, DEFAULT_RULES, GatewayConfig, RoutingRule

Profile = Literal["embedded", "production"]

#: Default topic partitions by profile (see ``Settings.partitions``).
EMBEDDED_PARTITIONS = 2
PRODUCTION_PARTITIONS = 8


#: A retry delay in seconds (a schedule of zeros or negatives would spin against the PSP).
Delay = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StripeSettings(_Section):
    """Stripe connector: API key and webhook signing secret are secrets."""

    api_key: SecretStr = SecretStr("sk_test_paybus")
    webhook_secret: SecretStr = SecretStr("whsec_paybus")
    #: ``None`` talks to api.stripe.com; the embedded profile points it at localstripe.
    base_url: str | None = None
    #: Webhook timestamps older than this are refused as replays.
    webhook_tolerance_s: int = 300
    #: The publishable key the payment page's Stripe.js uses (public by design).
    publishable_key: str = "pk_test_paybus"


class PagesSettings(_Section):
    """Hosted payment pages: ``GET /pay/{psp}/{id}`` on the ``web`` role (streams/pages.py)."""

    #: Where customers reach the ``web`` role; page links written to the CRM start with it.
    #: ``None``: pages are off in production, ``http://<web host>:<web port>`` when embedded.
    public_url: str | None = None
    #: HMAC key of the page links (a link cannot be made for another payment or stretched).
    secret: SecretStr = SecretStr("paybus_page_secret")
    #: How long a page link stays valid after the payment was requested.
    link_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)


class GoCardlessSettings(_Section):
    """GoCardless connector."""

    access_token: SecretStr = SecretStr("sandbox_token_paybus")
    webhook_secret: SecretStr = SecretStr("gc_webhook_secret_paybus")
    #: ``None`` talks to GoCardless's own sandbox/live API by ``environment``.
    base_url: str | None = None
    environment: Literal["sandbox", "live"] = "sandbox"


class SalesforceSettings(_Section):
    """Salesforce CRM connector (object and field names are configurable)."""

    instance_url: str | None = None
    session_id: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    api_version: str = "59.0"
    #: CA bundle for a private instance (the embedded sandbox's self-signed certificate).
    ca_bundle: Path | None = None
    payment_object: str = "Payment__c"
    mandate_object: str = "Mandate__c"
    refund_object: str = "Refund__c"
    #: The payment object's field for its payment page link; empty: the org has none.
    payment_page_field: str = "Payment_Page_URL__c"
    poll_interval_s: float = 5.0
    batch_size: int = Field(default=200, ge=1, le=200)
    #: Longest wait of a batch's first status update for others to join it: the CRM writer's
    #: share of the webhook -> CRM latency, traded against API calls (the org's daily
    #: allowance is the scarce resource). A backlog fills batches to ``updates_per_batch``
    #: whatever the wait (they form while the previous batch is written), so this only
    #: prices a steady flow: at 1,000 updates/s, 0.15 s cost 11.6 calls per 1,000 updates
    #: and 0.5 s cost 4.0 when each batch pays a read and a write (``version_guard=read``);
    #: with the org-side rules (a write only), 0.2 s cost 4.4-4.8 and 0.15 s cost 5.7-5.9.
    #: 0.17 s spends what the bench's cost target allows (6 per 1,000: 5.5-5.6 measured, org
    #: rules) on latency: webhook -> CRM p99 at 1,000/s of 256-270 ms against 282-293 at
    #: 0.2 s. With the read guard (the default until the rules are deployed) every batch
    #: also pays a read, about twice the calls: deploy the rules, or lengthen this.
    flush_interval_s: float = Field(default=0.17, gt=0)
    #: Status updates the writer takes per batch; None: ``batch_size``. Updates are coalesced
    #: per record before writing, so a batch larger than one collection call pays off: 1,000
    #: updates of 300 records cost 3 API calls in one batch, 10 in five batches of 200.
    updates_per_batch: int | None = Field(default=1000, ge=1, le=10000)
    #: API calls a minute this process's CRM writer and poller may make together, on average
    #: (a burst of ten seconds' worth after a quiet spell); None: unpaced. Waiting grows the
    #: next batch, so updates cost fewer calls and arrive later. Size it from the org's daily
    #: allowance (calls per 24 h / 1,440, times this worker's share).
    calls_per_minute: float | None = Field(default=None, gt=0)
    #: Where the CRM version guard lives. ``read``: the writer reads each record's Bus_Seq__c
    #: before writing it (a read and a write call per batch of uncached records). ``rule``:
    #: the org's validation rule (``deploy/salesforce``) refuses an older seq inside the write,
    #: atomically, so records addressed by Id are written unread; where the no-create rule is
    #: deployed too, records addressed by external id are upserted unread. The rules are looked
    #: up at start and hourly; an object without them active keeps ``read`` (logged, and in
    #: ``paybus_crm_version_guard``).
    version_guard: Literal["read", "rule"] = "read"
    #: Name of that validation rule (``version_guard=rule``).
    guard_rule: str = "Paybus_Bus_Seq_Guard"
    #: Name of the rule refusing inserts that carry Bus_Seq__c (``version_guard=rule``).
    no_create_rule: str = "Paybus_Bus_No_Create"
    #: Write attempts of a retryable failure of some records (a row lock) before the DLQ.
    #: When Salesforce as a whole does not answer (unreachable, 5xx, 429, out of API calls)
    #: the writer does not count attempts: it waits the outage out, retrying at most every
    #: ``outage_retry_max_s``, and the updates wait in Kafka (consumer lag shows them).
    write_attempts: int = Field(default=5, ge=1)
    outage_retry_max_s: float = Field(default=60.0, gt=0)
    #: Records read per object per poll (one SOQL call each).
    poll_limit: int = Field(default=200, ge=1, le=2000)


class CrmSettings(_Section):
    """The CRM side: write-back, change source, HTTP ingest and failure alerts."""

    #: Shared secret of the HMAC-signed ``POST /events/crm`` ingest endpoint.
    ingest_secret: SecretStr = SecretStr("crm_ingest_secret_paybus")
    #: Poll the CRM for changed records (off when the CRM pushes through the ingest endpoint).
    poll: bool = True
    #: The CRM user the bus writes as (its own write-backs are not changes).
    integration_username: str | None = None
    #: SMTP relay and addresses for "record could not be updated" alerts (off without host).
    alert_smtp_host: str | None = None
    alert_smtp_port: int = 25
    alert_from: str = "paybus@localhost"
    alert_to: tuple[str, ...] = ()
    #: Submission relays (port 587: Office 365, SES, Gmail) take mail only over STARTTLS and
    #: after a login; without these the alerts could reach nothing but an open relay. The
    #: relay's certificate is verified against the system CAs, or ``alert_smtp_ca_bundle``.
    alert_smtp_starttls: bool = False
    alert_smtp_username: str | None = None
    alert_smtp_password: SecretStr | None = None
    alert_smtp_ca_bundle: Path | None = None
    #: Largest accepted ``POST /events/crm`` body.
    ingest_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: A signed push whose timestamp is further than this from now is refused (a replay).
    ingest_tolerance_s: int = Field(default=300, gt=0)
    #: Also accept the older ``sha256=<HMAC of the body>`` signature, which signs no time
    #: (replayable): only for a sender that cannot add one.
    ingest_untimed_signatures: bool = False

    @model_validator(mode="after")
    def _login_only_over_tls(self) -> CrmSettings:
        """A relay login without STARTTLS would send the password in clear text: smtplib
        logs in whenever the relay offers AUTH, encrypted or not."""
        login = self.alert_smtp_username or self.alert_smtp_password is not None
        if login and not self.alert_smtp_starttls:
            raise ValueError(
                "alert_smtp_username/alert_smtp_password need alert_smtp_starttls=true "
                "(a login without TLS sends the password in clear text)"
            )
        return self


class OpsSettings(_Section):
    """Background jobs and the operator API."""

    #: Bearer token for the operator/SDK endpoints (``POST /bank-details``).
    api_token: SecretStr = SecretStr("paybus_api_token")
    #: Janitor: aggregates stuck in a non-final status longer than this are looked up at the PSP.
    janitor_interval_s: float = Field(default=300.0, gt=0)
    janitor_stuck_after_s: float = Field(default=86400.0, gt=0)
    #: Payment pages whose link expired are cancelled at their PSP, the CRM record showing
    #: ``cancelled`` and why (streams/page_expiry.py): the janitor checks this often ...
    page_expiry_check_s: float = Field(default=300.0, gt=0)
    #: ... and cancels only this long after the link's expiry, so a customer who paid at the
    #: last second is seen paid first (their webhook on its way; Stripe refuses to cancel a
    #: paid PaymentIntent anyway, and the connector then reports its actual status).
    page_expiry_grace_s: float = Field(default=300.0, ge=0)
    #: Scheduled collection of due direct debits, in bounded batches.
    collection_interval_s: float = Field(default=60.0, gt=0)
    collection_batch_size: int = Field(default=100, ge=1)
    #: Days before its collection date a held direct debit is submitted (scheme lead time).
    collection_lead_days: int = Field(default=0, ge=0)
    #: Scheduled PSP event backfill (``None``: off; ``paybus backfill`` runs it by hand).
    backfill_interval_s: float | None = None
    #: How often the ops role replays dead letters whose ``retry_at`` has passed (it reads
    #: ``paybus.dlq`` that often too, so a letter waits at most this long past its time).
    dlq_auto_replay_interval_s: float = Field(default=5.0, gt=0)
    #: Letters waiting for an automatic replay whose bytes the ops role keeps in memory (a
    #: webhook each, up to ``webhook_max_body_bytes``); letters beyond it are left to
    #: operators (logged, and counted as pending for a human). 0: automatic replay off.
    dlq_auto_replay_max_letters: int = Field(default=1000, ge=0)


class Settings(BaseSettings):
    """Effective configuration of one paybus process."""

    model_config = SettingsConfigDict(
        env_prefix="PAYBUS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    profile: Profile = "embedded"
    #: Faust application id: the consumer group and the prefix of table changelog topics.
    app_id: str = "paybus"
    bootstrap_servers: str = "127.0.0.1:9092"
    #: With a registry URL values use the Confluent wire format; without, Avro single-object.
    schema_registry_url: str | None = None
    topic_prefix: str = "paybus"
    #: Partitions of every topic: the most workers a stage can spread over. Production: 8.
    #: Embedded (unset): 2. Tansu does work for every partition a fetch names (metadata and
    #: watermark look-ups, and for one with new records a listing of all its batches), so on
    #: one machine more partitions buy no parallelism and cost broker CPU and latency: at
    #: 1,000 webhooks/s on 2 cores, webhook -> CRM p99 about 235 / 250 / 280 ms at 2 / 4 / 8
    #: partitions, the broker at 0.40 cores against 0.60 at 8. PSP calls are not bound by it
    #: (``connector_concurrency``).
    partitions: int = Field(default=PRODUCTION_PARTITIONS, ge=1)
    replication_factor: int | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    #: Faust stores table state (rocksdb or memory); memory is right for the embedded profile.
    store: str = "memory://"
    data_dir: Path = Path(".paybus")
    #: Consumer session timeout; ``None`` picks the profile's default.
    session_timeout_s: float | None = None
    #: Consumer fetch max wait (Faust fixes 1.5 s; Tansu holds an empty fetch that long, and
    #: a record arriving meanwhile waits for it). Embedded: 20 ms, a Kafka hop of 7 / 16 ms
    #: at p50 / p99 against 12 / 31 at 50 ms (``make bench``'s hop row), for about 0.01 core
    #: of broker and 0.01 of worker per idle worker more; 10 ms cost more cores than it saved
    #: at 1,000 webhooks/s on 2 cores.
    fetch_max_wait_ms: int | None = None
    #: Longest a worker's consumer may go without fetching before aiokafka takes it out of
    #: the group (Faust's ``broker_max_poll_interval``); Faust stops fetching a stage's
    #: partitions while its stream buffer is full. A stage waiting on purpose (the CRM
    #: writer through a Salesforce outage) counts as fetching: see consumer_waits.py.
    max_poll_interval_s: float = Field(default=1000.0, gt=0)
    #: How long a stopping worker waits for Kafka to acknowledge what it already sent. With the
    #: broker unreachable, Faust's producer would wait out its 20-minute request timeout and
    #: the worker would outlive any SIGTERM grace period. Nothing is lost by giving up: a
    #: stage acks its input only once its outputs are acknowledged, so what was not is
    #: processed again after the restart.
    stop_flush_timeout_s: float = Field(default=10.0, gt=0)
    #: Longest a worker takes to stop after SIGTERM or SIGINT before it exits anyway, logged
    #: (:mod:`streams.stop_watchdog`); below Kubernetes' default 30 s grace period.
    stop_timeout_s: float = Field(default=25.0, gt=0)
    #: Where end offsets come from: ``fetch`` high-water marks (Tansu's ListOffsets is short by
    #: the last batch) or ``list_offsets`` (right on Apache Kafka, cheaper). ``None``: by profile.
    end_offsets: Literal["fetch", "list_offsets"] | None = None
    #: Held events older than this are reconciled against the PSP.
    hold_timeout_s: float = Field(default=900.0, gt=0)
    #: Delays before each parked retry; its length is the number of retries (at least one:
    #: a command that fails transiently is always parked once before its dead letter).
    retry_schedule_s: tuple[Delay, ...] = Field(
        default=(60.0, 300.0, 900.0, 3600.0, 21600.0), min_length=1
    )
    #: Delays before each automatic replay of a webhook the normaliser could not map because a
    #: PSP call failed transiently (a payout look-up answered 503): it is dead-lettered with a
    #: ``retry_at`` and the ops role replays it (streams/auto_replay.py). Its length is the
    #: number of automatic replays; then the letter waits for an operator. Empty: off.
    normaliser_retry_schedule_s: tuple[Delay, ...] = (10.0, 60.0, 300.0, 900.0)
    #: PSP calls one connector worker has in flight per PSP: each payment's commands run in
    #: order, different payments side by side up to this many (a PSP answers in 0.2-1 s, so
    #: one call at a time would cap a worker at a few commands a second, whatever the
    #: partitions). Mind the PSP's rate limit (Stripe: 25/s in test mode, 100/s live).
    connector_concurrency: int = Field(default=8, ge=1)
    #: Events the sequencer judges per batch (one changelog write per aggregate per batch).
    batch_max_events: int = Field(default=500, ge=1)
    #: How long the first event of a batch waits for more when the stage is idle (a busy
    #: stage batches what arrived while it worked, without waiting: see agents/batches.py).
    batch_linger_s: float = Field(default=0.005, ge=0)
    max_seen_ids: int = Field(default=64, ge=1)
    #: Aggregates whose decoded state the sequencer keeps beside the table's bytes (a
    #: bounded cache: ~1 kB each; 0 turns it off). See agents/state_cache.py.
    state_cache_size: int = Field(default=20_000, ge=0)
    max_held_events: int = Field(default=32, ge=1)
    webhook_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    #: A webhook not durably in Kafka within this long is answered 503 (the PSP retries).
    webhook_publish_timeout_s: float = Field(default=10.0, gt=0)
    log_level: str = "WARNING"
    #: How often a worker re-reads the consumer lag of the partitions it owns (for /metrics).
    lag_refresh_s: float = Field(default=15.0, gt=0)
    #: Gateways (connector + what it may take) and the rules choosing between them, in order.
    gateways: tuple[GatewayConfig, ...] = DEFAULT_GATEWAYS
    routing_rules: tuple[RoutingRule, ...] = DEFAULT_RULES
    stripe: StripeSettings = StripeSettings()
    pages: PagesSettings = PagesSettings()
    gocardless: GoCardlessSettings = GoCardlessSettings()
    salesforce: SalesforceSettings = SalesforceSettings()
    crm: CrmSettings = CrmSettings()
    ops: OpsSettings = OpsSettings()

    @model_validator(mode="after")
    def _profile_defaults(self) -> Settings:
        """Fill profile-dependent defaults (the model is frozen, so set them once here)."""
        embedded = self.profile == "embedded"
        defaults: dict[str, Any] = {
            "session_timeout_s": 2.0 if embedded else 10.0,
            "fetch_max_wait_ms": 20 if embedded else 500,
            "replication_factor": 1 if embedded else 3,
            "end_offsets": "fetch" if embedded else "list_offsets",
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if embedded and "partitions" not in self.model_fields_set:  # unset: the profile's
            object.__setattr__(self, "partitions", EMBEDDED_PARTITIONS)
        return self

    @property
    def page_base_url(self) -> str | None:
        """The base of payment page links, or None when pages are off."""
        if self.pages.public_url:
            return self.pages.public_url.rstrip("/")
        if self.profile == "embedded":  # a customer cannot browse to "every interface"
            host = "127.0.0.1" if self.web_host in ("0.0.0.0", "::", "") else self.web_host
            return f"http://{host}:{self.web_port}"
        return None

    @property
    def effective_session_timeout_s(self) -> float:
        assert self.session_timeout_s is not None
        return self.session_timeout_s

    @property
    def effective_fetch_max_wait_ms(self) -> int:
        assert self.fetch_max_wait_ms is not None
        return self.fetch_max_wait_ms

    @property
    def effective_end_offsets(self) -> str:
        assert self.end_offsets is not None
        return self.end_offsets

    @property
    def effective_replication_factor(self) -> int:
        assert self.replication_factor is not None
        return self.replication_factor

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data with every secret masked (for ``paybus config``)."""
        masked: dict[str, Any] = _mask(self.model_dump())
        # effective, as the profile-dependent defaults above: the embedded profile's pages are
        # served by the web role itself when no public URL is set
        masked["pages"]["public_url"] = _mask(self.page_base_url)
        return masked


#: ``scheme://user:password@`` in a URL setting (a schema registry's basic auth, typically).
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]*@")


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, str):
        # URL settings are plain strings, and a password in one is a secret all the same.
        return _URL_PASSWORD.sub(r"\1:**********@", value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
