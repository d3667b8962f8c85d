"""The demo's story: CRM records created by "staff", carried through the bus to the PSPs and back.

Card payments go through Stripe (one is declined), direct debits through GoCardless (mandates
first: each payment is created once its mandate's PSP id has been written back to the CRM;
one debit is scripted to fail), and a few refunds follow confirmed payments. The GoCardless
sandbox's clock is advanced step by step and its webhooks are delivered shuffled and
duplicated; localstripe sends its own. The story is done when every record is in a final
status and the CRM shows what the PSPs show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from connectors.registry import load as load_connector
from streams.dev.stack import STRIPE_KEY, DevStack

FINAL = {
    "payment": {"confirmed", "paid_out", "failed", "partially_refunded", "refunded", "cancelled"},
    "mandate": {"active", "failed", "cancelled"},
    "refund": {"refunded", "failed"},
}
#: A direct debit is done once paid out (or failed, or charged back), not at "confirmed".
DEBIT_FINAL = {"paid_out", "failed", "charged_back"}
#: Which payments get refunded, and how much (None: in full).
REFUNDS: dict[str, float | None] = {
    "demo-card-01": 5.0,
    "demo-card-02": None,
    "demo-debit-01": 10.0,
}
#: The direct debit the GoCardless sandbox is told to fail.
FAILING_DEBIT = "demo-debit-02"
OBJECTS = {"payment": "Payment__c", "mandate": "Mandate__c", "refund": "Refund__c"}


@dataclass
class Row:
    """One CRM record the story created, and what it expects."""

    aggregate_type: str
    external_id: str
    record_id: str
    gateway: str
    label: str
    crm_status: str = ""
    psp_id: str = ""
    seq: int = 0
    psp_status: str = ""


@dataclass
class Scenario:
    stack: DevStack
    cards: int = 4
    debits: int = 3
    rows: dict[str, Row] = field(default_factory=dict)
    _customer: str = ""
    _refunded: set[str] = field(default_factory=set)
    _debited: set[str] = field(default_factory=set)
    _last_advance: float = 0.0
    _failed_scripted: bool = False
    _advances: int = 0

    # --- seeding ---------------------------------------------------------------------------

    def _sf(self) -> Any:
        return self.stack.salesforce.client(user="staff")

    def _create(self, kind: str, ext: str, gateway: str, label: str, **fields: Any) -> None:
        result = getattr(self._sf(), OBJECTS[kind]).create(
            {"Name": label, "External_Id__c": ext, "Status__c": "New", **fields}
        )
        self.rows[ext] = Row(kind, ext, str(result["id"]), gateway, label)

    def seed(self) -> None:
        import stripe

        client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": self.stack.stripe_base_url})
        self._customer = client.v1.customers.create(params={"name": "Ada Lovelace"}).id
        for i in range(1, self.cards + 1):
            declined = i == self.cards
            self._create(
                "payment", f"demo-card-{i:02d}", "stripe",
                "card, declined" if declined else "card",
                Amount__c=12.5 * i, Currency__c="EUR", Method__c="Card",
                Customer_Ref__c=self._customer,
                Payment_Method_Ref__c="pm_card_chargeCustomerFail" if declined else "pm_card_visa",
            )  # fmt: skip
        for i in range(1, self.debits + 1):
            token = self._bank_account(i)
            self._create(
                "mandate", f"demo-mandate-{i:02d}", "gocardless", "mandate",
                Method__c="Direct Debit", Gateway__c="gocardless", Payment_Method_Ref__c=token,
            )  # fmt: skip

    def _bank_account(self, i: int) -> str:
        """A customer bank account at GoCardless; the CRM only ever holds its token."""
        import gocardless_pro

        from streams.dev.stack import GC_TOKEN

        gc = gocardless_pro.Client(access_token=GC_TOKEN, base_url=self.stack.gocardless.base_url)
        customer = gc.customers.create({"given_name": "Grace", "family_name": f"Hopper {i}"})
        account = gc.customer_bank_accounts.create({
            "account_number": f"5577{i:04d}", "branch_code": "200000", "country_code": "GB",
            "account_holder_name": "Grace Hopper", "links": {"customer": customer.id},
        })  # fmt: skip
        return str(account.id)

    # --- the story moves on ----------------------------------------------------------------

    def refresh(self) -> None:
        """Read the CRM records back (as the demo's staff would see them)."""
        admin = self.stack.salesforce.admin
        for kind, obj in OBJECTS.items():
            for rec in admin.records(obj):
                row = self.rows.get(str(rec.get("External_Id__c")))
                if row is None or row.aggregate_type != kind:
                    continue
                row.crm_status = str(rec.get("Status__c") or "")
                row.psp_id = str(rec.get("Psp_Id__c") or "")
                row.seq = int(rec.get("Bus_Seq__c") or 0)

    def step(self) -> None:
        self.refresh()
        for row in list(self.rows.values()):
            if (
                row.aggregate_type == "mandate"
                and row.psp_id.startswith("MD")
                and row.external_id not in self._debited
            ):
                self._debited.add(row.external_id)
                n = row.external_id.rsplit("-", 1)[1]
                self._create(
                    "payment", f"demo-debit-{n}", "gocardless", "direct debit",
                    Amount__c=30.0, Currency__c="GBP", Method__c="Direct Debit",
                    Gateway__c="gocardless", Mandate_Ref__c=row.psp_id,
                )  # fmt: skip
            if (
                row.external_id == FAILING_DEBIT
                and row.psp_id.startswith("PM")
                and not self._failed_scripted
            ):
                self._failed_scripted = True
                self.stack.gocardless.set_outcome(row.psp_id, "failed")
            self._maybe_refund(row)
        if time.monotonic() - self._last_advance > 1.0:
            # Deliver every other step: a batch then holds several events of one payment,
            # shuffled and duplicated, so the sequencer has reordering to undo.
            self._last_advance = time.monotonic()
            self._advances += 1
            self.stack.gocardless.advance(steps=1)
            if self._advances % 2 == 0:
                self.stack.gocardless.deliver_webhooks()

    def _maybe_refund(self, row: Row) -> None:
        if row.external_id not in REFUNDS or row.external_id in self._refunded:
            return
        if row.crm_status not in ("confirmed", "paid_out"):
            return
        self._refunded.add(row.external_id)
        amount = REFUNDS[row.external_id]
        payment_amount = 12.5 * int(row.external_id[-2:]) if row.gateway == "stripe" else 30.0
        self._create(
            "refund", row.external_id.replace("demo-", "demo-refund-"), row.gateway,
            "partial refund" if amount else "full refund",
            Amount__c=amount or payment_amount,
            Currency__c="EUR" if row.gateway == "stripe" else "GBP",
            Payment__c=row.record_id, Gateway__c=row.gateway,
        )  # fmt: skip

    # --- verdict ---------------------------------------------------------------------------

    def psp_statuses(self) -> None:
        """Ask each PSP (through its connector) for the current status of every record."""
        settings = self.stack.worker_settings()
        connectors = {name: load_connector(name, settings) for name in ("stripe", "gocardless")}
        for row in self.rows.values():
            if not row.psp_id:
                row.psp_status = ""
                continue
            try:
                row.psp_status = (
                    connectors[row.gateway].lookup_status(row.aggregate_type, row.psp_id).status
                )
            except Exception as exc:  # shown in the table, not fatal for the demo
                row.psp_status = f"? {type(exc).__name__}"

    def finished(self) -> bool:
        """Every record final, every refund issued, and every debit created."""
        if len(self._debited) < self.debits or not set(REFUNDS) <= self._refunded:
            return False
        return all(self._final(r) for r in self.rows.values())

    def settled(self) -> int:
        """How many records are in a final status (the plain progress line counts them)."""
        return sum(self._final(r) for r in self.rows.values())

    @staticmethod
    def _final(row: Row) -> bool:
        if row.external_id.startswith("demo-debit"):
            return row.crm_status in DEBIT_FINAL
        return row.crm_status in FINAL[row.aggregate_type]

    def matched(self) -> bool:
        return all(r.crm_status and r.crm_status == r.psp_status for r in self.rows.values())
