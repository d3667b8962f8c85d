"""How sandbox objects move through GoCardless's statuses, and the events that records.

The paths are data: one list of statuses per (resource type, scripted outcome). A record's
next step is the next entry of its path; a record whose status is the last entry, or not on
its path at all (cancelled, a failure cascaded from its mandate), is final. Every status
change goes through ``Engine.transition``, which writes the resource, its event (named the
way GoCardless names it) and the webhook outbox row in one transaction, so the events list
is always a complete history for a backfill to page through.
"""

from __future__ import annotations

from .clock import DAY_MS, Clock, format_date, format_ms
from .errors import invalid_state
from .store import Filter, Json, Record, Store

CREDITOR_ID = "CR0SANDBOX00001"
CREDITOR_BANK_ACCOUNT_ID = "BA0SANDBOXCR01"
OUTCOME_KEY = "sandbox_outcome"

PATHS: dict[str, dict[str, list[str]]] = {
    "payments": {
        "success": ["pending_submission", "submitted", "confirmed", "paid_out"],
        "failed": ["pending_submission", "submitted", "failed"],
        "late_failure": ["pending_submission", "submitted", "confirmed", "failed"],
        "charged_back": [
            "pending_submission",
            "submitted",
            "confirmed",
            "paid_out",
            "charged_back",
        ],
    },
    "mandates": {
        "success": ["pending_submission", "submitted", "active"],
        "failed": ["pending_submission", "submitted", "failed"],
    },
    "refunds": {
        "success": ["created", "pending_submission", "paid"],
        "failed": ["created", "pending_submission", "failed"],
    },
}

# (resource type, action) -> (origin, cause, description), worded after GoCardless's events.
DETAILS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("payments", "created"): ("api", "payment_created", "Payment created via the API."),
    ("payments", "submitted"): (
        "gocardless",
        "payment_submitted",
        "Payment submitted to the banks. As a result, it can no longer be cancelled.",
    ),
    ("payments", "confirmed"): (
        "gocardless",
        "payment_confirmed",
        "Enough time has passed since the payment was submitted for the banks to return an "
        "error, so this payment is now confirmed.",
    ),
    ("payments", "paid_out"): (
        "gocardless",
        "payment_paid_out",
        "The payment has been paid out by GoCardless.",
    ),
    ("payments", "failed"): (
        "bank",
        "insufficient_funds",
        "The customer's account had insufficient funds to make this payment.",
    ),
    ("payments", "charged_back"): (
        "bank",
        "authorisation_disputed",
        "The customer has disputed that the amount taken from their account was authorised.",
    ),
    ("payments", "cancelled"): ("api", "payment_cancelled", "The payment was cancelled."),
    ("payments", "resubmission_requested"): (
        "api",
        "payment_retried",
        "An attempt to collect this payment has been requested.",
    ),
    ("mandates", "created"): ("api", "mandate_created", "Mandate created via the API."),
    ("mandates", "submitted"): (
        "gocardless",
        "mandate_submitted",
        "The mandate has been submitted to the banks.",
    ),
    ("mandates", "active"): (
        "gocardless",
        "mandate_activated",
        "The mandate has been successfully set up by the customer's bank.",
    ),
    ("mandates", "failed"): (
        "bank",
        "invalid_bank_details",
        "The specified bank account does not exist or was closed.",
    ),
    ("mandates", "cancelled"): (
        "api",
        "mandate_cancelled",
        "The mandate was cancelled at your request.",
    ),
    ("refunds", "created"): (
        "api",
        "payment_refunded",
        "The refund has been created, and will be submitted in the next batch.",
    ),
    ("refunds", "paid"): (
        "gocardless",
        "refund_paid",
        "The refund has been paid to your customer.",
    ),
    ("refunds", "failed"): (
        "bank",
        "refund_failed",
        "The refund did not reach your customer. The funds have been returned to you.",
    ),
    ("payouts", "paid"): (
        "gocardless",
        "payout_paid",
        "GoCardless has transferred the payout to the creditor's bank account.",
    ),
}
BANK_FAILURES = {"failed", "charged_back"}
LINK_KEY = {"payments": "payment", "mandates": "mandate", "refunds": "refund", "payouts": "payout"}
SILENT = {("refunds", "pending_submission")}  # GoCardless sends no event for this step
CANCELLABLE_MANDATE = {"pending_customer_approval", "pending_submission", "submitted", "active"}


class Engine:
    """The sandbox's state machine over a ``Store`` and a ``Clock``.

    ``step_ms`` is how long each status lasts when time is advanced by a duration (one day by
    default, so ``advance {"days": 4}`` takes a new payment all the way to ``paid_out``).
    """

    def __init__(self, store: Store, step_ms: int = DAY_MS) -> None:
        self.store = store
        self.step_ms = step_ms
        self.clock = Clock(
            int(store.get_setting("clock_offset_ms") or 0),
            int(store.get_setting("clock_last_ms") or 0),
        )
        self._payouts: dict[str, Json] = {}

    def save_clock(self) -> None:
        self.store.set_setting("clock_offset_ms", self.clock.offset_ms)
        self.store.set_setting("clock_last_ms", self.clock.last_ms)

    # -- paths ------------------------------------------------------------------------------

    @staticmethod
    def next_status(rtype: str, status: str, outcome: str | None) -> str | None:
        path = PATHS.get(rtype, {}).get(outcome or "success")
        if not path or status not in path:
            return None
        i = path.index(status)
        return path[i + 1] if i + 1 < len(path) else None

    def due_after(self, rtype: str, status: str, outcome: str | None, at_ms: int) -> int | None:
        return None if self.next_status(rtype, status, outcome) is None else at_ms + self.step_ms

    def outcome_from(self, rtype: str, metadata: Json) -> str | None:
        """The scripted outcome asked for in ``metadata["sandbox_outcome"]``, validated."""
        wanted = metadata.get(OUTCOME_KEY)
        if wanted is None:
            return None
        if wanted not in PATHS[rtype]:
            raise invalid_state("invalid_sandbox_outcome", _outcome_help(rtype, str(wanted)))
        return str(wanted)

    # -- events -----------------------------------------------------------------------------

    def record_event(
        self,
        rtype: str,
        resource: Json,
        action: str,
        at_ms: int | None = None,
        metadata: Json | None = None,
        details: tuple[str, str, str] | None = None,
    ) -> Json:
        origin, cause, description = details or DETAILS[(rtype, action)]
        detail: Json = {"origin": origin, "cause": cause, "description": description}
        if action in BANK_FAILURES or (origin == "bank" and rtype != "refunds"):
            detail.update({"scheme": "bacs", "reason_code": "ARUDD-0"})
        if rtype == "payments" and action == "failed":
            detail["will_attempt_retry"] = False
        links: Json = {LINK_KEY[rtype]: resource["id"]}
        if rtype == "payments" and resource["links"].get("payout") and action == "paid_out":
            links["payout"] = resource["links"]["payout"]
        event: Json = {
            "id": self.store.new_id("EV"),
            "created_at": format_ms(self.clock.stamp(at_ms)),
            "resource_type": rtype,
            "action": action,
            "links": links,
            "details": detail,
            "metadata": metadata or {},
            "resource_metadata": dict(resource.get("metadata") or {}),
        }
        record = self.store.insert("events", event)
        self.store.enqueue(record.seq, event["id"])
        return event

    # -- transitions ------------------------------------------------------------------------

    def transition(
        self,
        record: Record,
        status: str,
        at_ms: int | None = None,
        action: str | None = None,
        metadata: Json | None = None,
        details: tuple[str, str, str] | None = None,
    ) -> list[Json]:
        """Move one record to ``status``, with its side effects; returns the events written."""
        events: list[Json] = []
        with self.store.transaction():
            record.data["status"] = status
            if record.type == "payments" and status == "paid_out":
                payout = self._payout_for(record.data)
                record.data["links"]["payout"] = payout["id"]
            if record.type == "mandates":
                days = 1 if status == "active" else 3
                record.data["next_possible_charge_date"] = format_date(
                    (at_ms or self.clock.now_ms()) + days * DAY_MS
                )
            if record.type == "refunds" and status == "failed":
                self._unrefund(record.data)
            if (record.type, status) not in SILENT:
                events.append(
                    self.record_event(
                        record.type, record.data, action or status, at_ms, metadata, details
                    )
                )
            stamp = self.clock.last_ms
            record.due_at = self.due_after(record.type, status, record.outcome, stamp)
            self.store.save(record)
            if record.type == "mandates" and status in {"failed", "cancelled"}:
                events.extend(self._cascade(record, status))
            self.save_clock()
        return events

    def step(self, record: Record, at_ms: int | None = None) -> list[Json]:
        status = self.next_status(record.type, record.data["status"], record.outcome)
        return [] if status is None else self.transition(record, status, at_ms)

    def advance(self, steps: int = 1, to_ms: int | None = None) -> list[Json]:
        """Move the world on: ``steps`` times one step for every non-final object, or (with
        ``to_ms``) every step due by then, in due order, stamped at its due time."""
        events: list[Json] = []
        if to_ms is None:
            for _ in range(steps):
                for stale in self.store.due():
                    record = self.store.get(stale.type, stale.id)
                    if record is not None and record.due_at is not None:
                        events.extend(self.step(record))
        else:
            while due := self.store.due(until_ms=to_ms):
                record = min(due, key=lambda r: (r.due_at or 0, r.seq))
                events.extend(self.step(record, record.due_at))
            self.clock.move_to(to_ms)
        events.extend(self._flush_payouts())
        self.save_clock()
        return events

    # -- actions ----------------------------------------------------------------------------

    def cancel_payment(self, record: Record, metadata: Json) -> list[Json]:
        if record.data["status"] not in {"pending_submission", "pending_customer_approval"}:
            raise invalid_state(
                "cancellation_failed",
                f"This payment cannot be cancelled: its status is {record.data['status']}",
            )
        return self.transition(record, "cancelled", metadata=metadata)

    def retry_payment(self, record: Record, metadata: Json) -> list[Json]:
        if record.data["status"] != "failed":
            raise invalid_state("retry_failed", "Only failed payments can be retried")
        mandate = self.store.get("mandates", record.data["links"]["mandate"])
        if mandate is None or mandate.data["status"] in {"failed", "cancelled", "expired"}:
            raise invalid_state("mandate_is_inactive", "The payment's mandate is not active")
        record.outcome = None  # a retried payment succeeds unless scripted again
        record.data["charge_date"] = format_date(self.clock.now_ms() + 3 * DAY_MS)
        return self.transition(
            record, "pending_submission", action="resubmission_requested", metadata=metadata
        )

    def cancel_mandate(self, record: Record, metadata: Json) -> list[Json]:
        if record.data["status"] not in CANCELLABLE_MANDATE:
            raise invalid_state(
                "cancellation_failed",
                f"This mandate cannot be cancelled: its status is {record.data['status']}",
            )
        return self.transition(record, "cancelled", metadata=metadata)

    def set_outcome(self, record: Record, outcome: str) -> None:
        """Script how a not-yet-final object ends (admin call)."""
        if outcome not in PATHS.get(record.type, {}):
            raise invalid_state("invalid_sandbox_outcome", _outcome_help(record.type, outcome))
        if self.next_status(record.type, record.data["status"], outcome) is None:
            raise invalid_state(
                "invalid_sandbox_outcome",
                f"{record.id} is {record.data['status']}: outcome {outcome} can no longer apply",
            )
        record.outcome = outcome
        if record.due_at is None:
            record.due_at = self.clock.now_ms() + self.step_ms
        self.store.save(record)

    # -- side effects -----------------------------------------------------------------------

    def _cascade(self, mandate: Record, status: str) -> list[Json]:
        """A failed or cancelled mandate takes its uncollected payments with it."""
        events: list[Json] = []
        doomed = {"pending_submission", "pending_customer_approval"}
        if status == "failed":
            doomed.add("submitted")
        cause = "mandate_cancelled" if status == "cancelled" else "mandate_failed"
        origin = "api" if status == "cancelled" else "bank"
        target = "cancelled" if status == "cancelled" else "failed"
        text = f"The mandate for this payment was {'cancelled' if target == 'cancelled' else 'failed'}."  # noqa: E501
        for payment in self.store.find("payments", [Filter("$.links.mandate", "=", mandate.id)]):
            if payment.data["status"] in doomed:
                events.extend(self.transition(payment, target, details=(origin, cause, text)))
        return events

    def _unrefund(self, refund: Json) -> None:
        payment = self.store.get("payments", refund["links"]["payment"])
        if payment is not None:
            payment.data["amount_refunded"] -= refund["amount"]
            self.store.save(payment)

    def _payout_for(self, payment: Json) -> Json:
        """The payout this advance pays ``payment`` into: one per currency per advance."""
        currency = payment["currency"]
        payout = self._payouts.get(currency)
        if payout is None:
            payout = {"id": self.store.new_id("PO"), "amount": 0, "currency": currency}
            self._payouts[currency] = payout
        payout["amount"] += payment["amount"]
        return payout

    def _flush_payouts(self) -> list[Json]:
        """Write the payouts collected during an advance, each with its ``paid`` event."""
        events: list[Json] = []
        with self.store.transaction():
            for draft in self._payouts.values():
                now = self.clock.stamp()
                payout: Json = {
                    "id": draft["id"],
                    "amount": draft["amount"],
                    "arrival_date": format_date(now + DAY_MS),
                    "created_at": format_ms(now),
                    "currency": draft["currency"],
                    "deducted_fees": 0,
                    "payout_type": "merchant",
                    "reference": f"SANDBOX-{draft['id'][-6:]}",
                    "status": "paid",
                    "metadata": {},
                    "links": {
                        "creditor": CREDITOR_ID,
                        "creditor_bank_account": CREDITOR_BANK_ACCOUNT_ID,
                    },
                }
                self.store.insert("payouts", payout)
                events.append(self.record_event("payouts", payout, "paid"))
            self._payouts = {}
        return events


def _outcome_help(rtype: str, outcome: str) -> str:
    choices = ", ".join(sorted(PATHS.get(rtype, {}))) or "none"
    return f"Unknown sandbox outcome {outcome!r} for {rtype}; choose one of: {choices}"
