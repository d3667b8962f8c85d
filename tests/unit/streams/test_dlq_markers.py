"""Replay and discard markers: what goes onto ``paybus.dlq`` for a closed letter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams import dlq_store
from streams.codec import AvroCodec
from streams.deadletters import make_dead_letter
from streams.dlq_store import Letter


class _Producer:
    """Records what would be sent (no broker)."""

    sent: list[tuple[str, bytes, bytes]] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    def send(self, topic: str, *, key: bytes, value: bytes, **kwargs: Any) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_discard_reason_never_puts_a_card_number_on_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the operator's --reason is free text entering a record, like a PSP's error text
    monkeypatch.setattr(dlq_store, "KafkaProducer", _Producer)
    _Producer.sent = []
    record = make_dead_letter(
        topic="paybus.crm.changes", partition=0, offset=7, key=b"pay-1", value=b"x",
        stage="router", reason="refused", aggregate_id="pay-1",
    ).asdict()  # fmt: skip
    record["failed_at"] = datetime(2026, 12, 4, tzinfo=UTC)
    letter = Letter(record)
    dlq_store.discard("unused:9092", "paybus.dlq", [letter], "paid by card 4242 4242 4242 4242")
    [(topic, key, value)] = _Producer.sent
    marker = AvroCodec().decode(value, "DeadLetter")
    assert (topic, key, marker["stage"]) == ("paybus.dlq", letter.id.encode(), "discarded")
    assert "4242" not in marker["reason"] and marker["reason"].startswith("discarded: paid by")
    assert "4242" not in str(letter.resolution_reason)
