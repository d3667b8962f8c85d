"""Prometheus metrics of a paybus worker (served at ``/metrics`` on its web port).

Every message outcome is named and counted here; agents never drop a message without one of
these counters moving.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS = Counter(
    "paybus_events_total",
    "Messages judged, by stage and outcome (applied, duplicate, stale, held, rejected, ...).",
    ["stage", "outcome", "aggregate_type", "source"],
)
STAGE_ERRORS = Counter(
    "paybus_stage_errors_total",
    "Unexpected errors in a stage's unit of work (retried; the worker exits if they persist).",
    ["stage"],
)
DEAD_LETTERS = Counter(
    "paybus_dead_letters_total",
    "Messages sent to the DLQ for an operator, by stage (not those the bus replays by itself: "
    "paybus_dlq_scheduled_letters, paybus_dlq_auto_replays_total).",
    ["stage"],
)


def expect_dead_letters(stage: str) -> None:
    """Export ``stage``'s dead-letter count from start-up, at 0.

    A counter series that first appears at 1 has no earlier sample, so ``increase()`` over it
    is 0 and the DLQ alert would miss the first dead letter of every stage in every process
    (most of them: dead letters are rare and pods restart on every deploy)."""
    DEAD_LETTERS.labels(stage)


DECODE_ERRORS = Counter(
    "paybus_decode_errors_total", "Records that could not be decoded, by topic.", ["topic"]
)
OFFSET_GAP_REPAIRS = Counter(
    "paybus_offset_gap_repairs_total",
    "Partitions re-read from their committed offset because the record there was never "
    "delivered while later ones were (see streams.consumer).",
    ["topic"],
)
UNDELIVERED_REREADS = Counter(
    "paybus_undelivered_rereads_total",
    "Partitions sought back to a record fetched but not delivered while the flow was "
    "suspended (a rebalance); later records wait for it (see streams.consumer).",
    ["topic"],
)
SEQUENCER_EVICTIONS = Counter(
    "paybus_sequencer_evictions_total",
    "Entries pushed out of a bounded per-aggregate set (seen ids, held events).",
    ["kind"],
)
SEQUENCER_STATE_LOADS = Counter(
    "paybus_sequencer_state_loads_total",
    "Aggregate states read from the table: found decoded in the cache (hit) or decoded (miss).",
    ["result"],
)
HELD_EVENTS = Gauge("paybus_held_events", "Events currently held waiting for a gap to fill.")
OLDEST_HELD_AGE = Gauge(
    "paybus_oldest_held_event_age_seconds", "Age of the oldest held event (0 when none)."
)
RECONCILES = Counter(
    "paybus_reconciles_total", "Reconcile attempts for held events, by result.", ["result"]
)
CONNECTOR_LATENCY = Histogram(
    "paybus_connector_call_seconds",
    "Connector call latency by PSP and operation.",
    ["psp", "operation"],
)
CONNECTOR_CALLS = Counter(
    "paybus_connector_calls_total",
    "Connector calls by PSP, operation and result (ok, error).",
    ["psp", "operation", "result"],
)
CONNECTOR_ERRORS = Counter(
    "paybus_connector_errors_total",
    "Failed connector calls (each also observed in paybus_connector_call_seconds).",
    ["psp", "operation", "kind"],
)
CRM_BUDGET_WAIT = Counter(
    "paybus_crm_budget_wait_seconds_total",
    "Seconds CRM calls waited for the API budget (salesforce.calls_per_minute).",
    ["operation"],
)
CRM_VERSION_GUARD = Gauge(
    "paybus_crm_version_guard",
    "Where each CRM object's version guard lives: 1 on the mode in effect (read: the writer "
    "reads Bus_Seq__c first; rule: the org's validation rule refuses an older seq; upsert: "
    "and its no-create rule lets records named by external id be upserted unread).",
    ["object", "mode"],
)
CRM_API_ALLOWANCE = Gauge(
    "paybus_crm_api_allowance_calls",
    "The org's daily API allowance as the CRM last reported it (Sforce-Limit-Info): calls "
    "used by every integration of the org, and the limit.",
    ["crm", "kind"],
)
CRM_API_CALLS = Counter(
    "paybus_crm_api_calls_total",
    "CRM API calls (they count against the org's daily allowance).",
    ["crm", "operation"],
)
CRM_RECORDS_WRITTEN = Counter(
    "paybus_crm_records_written_total", "CRM records by write outcome.", ["outcome"]
)
STAGE_BATCH_EVENTS = Histogram(
    "paybus_stage_batch_events",
    "Events per batch a batched stage handled: small batches under a backlog mean per-batch "
    "costs (a produce round trip, a changelog write) are spread thin.",
    ["stage"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
#: Freshness, where lag only counts: how old records are (by their Kafka timestamp, the
#: producer's clock, so skew between hosts adds in) when a batched stage takes them from its
#: stream. That is their time in Kafka and in the consumer's fetch, before the stage's own
#: wait and work; a rising p99 with no lag means the hop, not the stage, is slow.
STAGE_PICKUP_AGE = Histogram(
    "paybus_stage_pickup_age_seconds",
    "Age of a record (now minus its Kafka timestamp) when a batched stage takes it.",
    ["stage"],
    buckets=(
        0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03,
        0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ),
)  # fmt: skip
CRM_WRITE_SECONDS = Histogram("paybus_crm_write_seconds", "CRM write batch latency.")
CRM_UNAVAILABLE = Gauge(
    "paybus_crm_unavailable",
    "1 while the CRM writer waits out a CRM outage (its updates wait in Kafka), else 0.",
)
CRM_WRITE_RETRIES = Counter(
    "paybus_crm_write_retries_total",
    "CRM write-back updates sent again after a retryable failure, by error code.",
    ["code"],
)
CRM_ALERTS = Counter(
    "paybus_crm_alerts_total",
    "Write-back failure e-mails, by result (sent, failed, disabled).",
    ["result"],
)
CRM_CHANGES = Counter(
    "paybus_crm_changes_total",
    "CRM changes by source (poller, ingest) and outcome (published, ignored, rejected, ...).",
    ["source", "outcome"],
)
CRM_POLLS = Counter(
    "paybus_crm_polls_total",
    "CRM poller rounds by result (committed, empty, failed).",
    ["result"],
)
WEBHOOKS = Counter(
    "paybus_webhooks_total", "Webhook requests by PSP and outcome.", ["psp", "outcome"]
)

BANK_DETAILS = Counter(
    "paybus_bank_details_total",
    "POST /bank-details requests by PSP and outcome (registered, invalid, unauthorized, "
    "too_large, refused, unavailable, error).",
    ["psp", "outcome"],
)
BACKFILL_EVENTS = Counter(
    "paybus_backfill_events_total",
    "PSP events re-read by a backfill, by PSP and outcome (published, unresolved).",
    ["psp", "outcome"],
)
BACKFILL_RUNS = Counter(
    "paybus_backfill_runs_total",
    "Scheduled backfill runs by PSP and result (ok, error, unsupported).",
    ["psp", "result"],
)

RETRIES = Counter(
    "paybus_retries_total",
    "Parking and retry outcomes by stage (parked, waiting, scheduled, retried, reparked, "
    "exhausted, stale, superseded, released, credentials_recheck).",
    ["stage", "outcome"],
)
PARKED_AGGREGATES = Gauge(
    "paybus_parked_aggregates", "Aggregates with commands parked in retry (this worker)."
)
PARKED_MESSAGES = Gauge("paybus_parked_messages", "Envelopes held by the retry agent.")
PARKED_FOR_CREDENTIALS = Gauge(
    "paybus_parked_for_credentials",
    "Commands held by the retry agent because the PSP refused paybus's credentials, or did "
    "not know an object it created for paybus (another account's key) (this worker), by PSP.",
    ["psp"],
)
COLLECTIONS = Counter(
    "paybus_scheduled_collections_total",
    "Direct debits held for their collection date, by outcome (scheduled, released).",
    ["outcome"],
)
JANITOR = Counter(
    "paybus_janitor_total",
    "Janitor look-ups of stuck aggregates, by result (changed, unchanged, failed, no_reference).",
    ["result"],
)
PAGE_EXPIRY = Counter(
    "paybus_page_expiry_total",
    "Payment pages whose link expired, by outcome: requested (a cancel intent published), "
    "requested_again (still waiting a janitor period later), failed (not published; tried "
    "again at the next check), and the payment's next status after a request: cancelled, or "
    "overtaken (paid or failed at the last second).",
    ["outcome"],
)
DLQ_AUTO_REPLAYS = Counter(
    "paybus_dlq_auto_replays_total",
    "Dead letters the ops role replayed by itself at their retry_at, by the stage that sent "
    "them and outcome: replayed (and marked), failed (tried again at the next tick), over_cap "
    "(more letters waited than ops.dlq_auto_replay_max_letters: left to operators).",
    ["stage", "outcome"],
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
