"""Pure write-back logic: coalescing per aggregate, payloads, redaction, IN-list chunking."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connectors.salesforce.settings import FieldMap
from connectors.salesforce.writer import Outcome, coalesce, in_chunks, record_payload, redact
from streams.records import StatusUpdate

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _update(agg: str, seq: int, kind: str = "payment", **extra: Any) -> StatusUpdate:
    return StatusUpdate(
        event_id=f"{agg}-{seq}",
        aggregate_id=agg,
        aggregate_type=kind,
        to_status=f"status-{seq}",
        occurred_at=NOW,
        seq=seq,
        source="test",
        **extra,
    )


def test_coalesce_keeps_the_highest_seq_per_aggregate_whatever_the_order() -> None:
    updates = [_update("a", 2), _update("b", 1), _update("a", 5), _update("a", 3), _update("b", 1)]
    targets, decided = coalesce(updates, FieldMap())
    assert decided == {}
    by_agg = {t.winner.aggregate_id: t for t in targets}
    assert by_agg["a"].winner.seq == 5 and by_agg["a"].winner_index == 2
    assert sorted(by_agg["a"].losers) == [0, 3]
    assert by_agg["b"].winner_index == 1 and by_agg["b"].losers == [4]  # first of equal seqs


def test_coalesce_separates_aggregate_types_and_carries_the_record_id() -> None:
    updates = [
        _update("x", 1, crm_record_id="a015g0000000001AAA"),
        _update("x", 2),
        _update("x", 1, kind="refund"),
    ]
    targets, _ = coalesce(updates, FieldMap())
    assert len(targets) == 2
    payment = next(t for t in targets if t.mapping.aggregate_type == "payment")
    assert payment.winner.seq == 2 and payment.crm_record_id == "a015g0000000001AAA"


def test_coalesce_fails_unknown_types_and_malformed_record_ids_without_a_call() -> None:
    updates = [_update("a", 1, kind="invoice"), _update("b", 1, crm_record_id="not-an-id!")]
    targets, decided = coalesce(updates, FieldMap())
    assert targets == []
    assert {i: r.outcome for i, r in decided.items()} == {0: Outcome.FAILED, 1: Outcome.FAILED}
    assert decided[1].error is not None and decided[1].error.code == "MALFORMED_ID"
    assert not decided[0].should_retry


def test_payload_writes_only_what_the_update_carries() -> None:
    mapping = FieldMap().payment
    bare = record_payload(mapping, "a015g0000000001AAA", _update("a", 7))
    assert bare == {"Id": "a015g0000000001AAA", "Status__c": "status-7", "Bus_Seq__c": 7}
    full = record_payload(
        mapping,
        "a015g0000000001AAA",
        _update("a", 8, psp_object_id="pi_123", settlement_date="2026-01-05", reason="x" * 400),
    )
    assert full["Psp_Id__c"] == "pi_123" and full["Settlement_Date__c"] == "2026-01-05"
    assert full["Failure_Reason__c"] == "x" * 255
    link = {"payment_page_url": "https://pay.example.com/pay/stripe/pi_1?exp=1&sig=ab"}
    paged = record_payload(mapping, None, _update("a", 9, attributes=link))
    assert paged["Payment_Page_URL__c"] == link["payment_page_url"]
    assert "Payment_Page_URL__c" not in record_payload(
        FieldMap().refund, None, _update("a", 9, kind="refund", attributes=link)
    ), "only payments have pages"


def test_card_and_bank_numbers_never_reach_the_crm() -> None:
    reason = "card 4242 4242 4242 4242 declined; iban GB82 WEST 1234 5698 7654 32 closed"
    masked = redact(reason)
    assert "4242 4242" not in masked and "5698" not in masked
    assert masked.count("[redacted]") == 2 and masked.startswith("card [redacted] declined")
    assert redact("insufficient_funds (code 51)") == "insufficient_funds (code 51)"
    payload = record_payload(
        FieldMap().payment, "a015g0000000001AAA", _update("a", 1, reason=reason)
    )
    assert "4242424242424242" not in str(payload).replace(" ", "")


def test_in_chunks_respects_the_literal_budget() -> None:
    values = [f"a015g{n:013d}" for n in range(500)]
    chunks = in_chunks(values, budget=1000)
    assert [v for c in chunks for v in c] == values
    assert all(sum(len(v) + 3 for v in c) <= 1000 for c in chunks)
    assert len(in_chunks(values[:200])) == 1  # a normal batch is one query
