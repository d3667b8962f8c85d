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
DEAD_LETTERS = Counter(
    "paybus_dead_letters_total", "Messages sent to the DLQ, by stage.", ["stage"]
)
DECODE_ERRORS = Counter(
    "paybus_decode_errors_total", "Records that could not be decoded, by topic.", ["topic"]
)
SEQUENCER_EVICTIONS = Counter(
    "paybus_sequencer_evictions_total",
    "Entries pushed out of a bounded per-aggregate set (seen ids, held events).",
    ["kind"],
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
CRM_API_CALLS = Counter(
    "paybus_crm_api_calls_total",
    "CRM API calls (they count against the org's daily allowance).",
    ["crm", "operation"],
)
CRM_RECORDS_WRITTEN = Counter(
    "paybus_crm_records_written_total", "CRM records by write outcome.", ["outcome"]
)
CRM_WRITE_SECONDS = Histogram("paybus_crm_write_seconds", "CRM write batch latency.")
WEBHOOKS = Counter(
    "paybus_webhooks_total", "Webhook requests by PSP and outcome.", ["psp", "outcome"]
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
