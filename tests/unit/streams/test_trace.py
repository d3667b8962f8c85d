"""``paybus trace``'s pure parts: where a key lives, and what each record says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.agents.commands import LINK_CONTENT_TYPE, is_link
from streams.trace import Step, partition_for, story_order, summarise

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("key", [b"pay-1", b"demo-card-01", b"PM064SP0000001", b"\xff\x00"])
def test_a_key_is_looked_for_where_fausts_producer_put_it(key: bytes) -> None:
    partitions = list(range(8))
    assert partition_for(key, 8) == DefaultPartitioner()(key, partitions, partitions)


def test_each_record_says_what_it_is_in_one_line() -> None:
    intent = summarise("CrmChange", {"aggregate_id": "p1", "intent": "create_payment",
                                     "occurred_at": AT, "source": "crm", "amount_minor": 1500,
                                     "currency": "GBP", "change_id": "c1"}, 0, 3)  # fmt: skip
    assert (intent.kind, intent.aggregate_id, intent.at, intent.offset) == (
        "intent create_payment", "p1", AT, 3,
    )  # fmt: skip
    assert intent.summary == "from crm, amount 1500, currency GBP, change c1"
    update = summarise("StatusUpdate", {"aggregate_id": "p1", "to_status": "confirmed",
                                        "from_status": "submitted", "seq": 4, "inferred": True,
                                        "occurred_at": AT, "event_id": "e9"}, 0, 0)  # fmt: skip
    assert update.kind == "status confirmed"
    assert update.summary == "from status submitted, seq 4, inferred yes, event e9"
    parked = summarise("RetryEnvelope", {"aggregate_id": "p1", "stage": "retry", "attempt": 2,
                                         "due_at": AT, "first_failed_at": AT,
                                         "error": "attempt 1: a\nattempt 2: b"}, 0, 0)  # fmt: skip
    assert parked.summary == "attempt 2, due 2026-12-04T12:00:00Z, error attempt 2: b"


def test_a_webhook_is_named_never_shown() -> None:
    body = b'{"card": "4242424242424242"}'
    hook = summarise("PspWebhook", {"psp": "stripe", "webhook_id": "evt_1", "body": body,
                                    "psp_object_id": "pi_1", "received_at": AT,
                                    "content_type": "application/json"}, 0, 0)  # fmt: skip
    assert hook.kind == "webhook stripe" and "4242" not in hook.summary
    link = summarise("PspWebhook", {"psp": "stripe", "webhook_id": "link:pi_1", "body": b"{}",
                                    "psp_object_id": "pi_1", "received_at": AT,
                                    "content_type": LINK_CONTENT_TYPE}, 0, 0)  # fmt: skip
    assert link.kind == "link stripe"


def test_a_record_without_its_time_falls_back_to_the_kafka_timestamp() -> None:
    step = summarise("DeadLetter", {"dead_letter_id": "d1", "stage": "crm-writer",
                                    "reason": "refused"}, 1_764_849_600_000, 0)  # fmt: skip
    assert step.at == datetime(2025, 12, 4, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="no summary"):
        summarise("Nope", {}, 0, 0)


def test_the_story_is_told_in_the_order_the_bus_wrote_it() -> None:
    # a PSP's event carries the PSP's own time in whole seconds: by it, the event came before
    # the command that caused it
    command = Step(AT.replace(microsecond=335_000), "commands", "command create_payment", "p1",
                   "", 0, written=AT.replace(microsecond=335_000))  # fmt: skip
    event = Step(AT, "events", "event confirmed", "p1", "", 0,
                 written=AT.replace(microsecond=610_000))  # fmt: skip
    status = Step(AT, "status", "status confirmed", "p1", "", 0,
                  written=AT.replace(microsecond=640_000))  # fmt: skip
    kinds = [s.kind for s in story_order([status, event, command])]
    assert kinds == ["command create_payment", "event confirmed", "status confirmed"]


def test_only_a_record_under_a_links_own_id_is_a_link() -> None:
    """A PSP's signed webhook relabelled with the link content type (the receiver refuses it
    now; records from before may be on the topic) carries the PSP's event id: a webhook."""
    assert is_link(LINK_CONTENT_TYPE, "link:pi_1", "pi_1")
    assert not is_link(LINK_CONTENT_TYPE, "evt_1", "pi_1")
    assert not is_link(LINK_CONTENT_TYPE, "link:pi_2", "pi_1")
    assert not is_link("application/json", "link:pi_1", "pi_1")
    relabelled = summarise("PspWebhook", {"psp": "stripe", "webhook_id": "evt_1", "body": b"{}",
                                          "psp_object_id": "pi_1", "received_at": AT,
                                          "content_type": LINK_CONTENT_TYPE}, 0, 0)  # fmt: skip
    assert relabelled.kind == "webhook stripe"
