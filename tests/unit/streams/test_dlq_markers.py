"""Replay and discard markers: what goes onto ``paybus.dlq`` for a closed letter."""

from __future__ import annotations

import json
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


class _Sent:
    def get(self, timeout: float) -> None:
        pass


class _ReplayProducer(_Producer):
    """Records re-injected records with their headers and partition, and markers."""

    def send(self, topic: str, *, key: bytes, value: bytes, **kwargs: Any) -> _Sent:
        self.sent.append((topic, key, value))
        _ReplayProducer.details.append(kwargs)
        return _Sent()

    details: list[dict[str, Any]] = []


def test_an_automatic_replay_sends_its_count_and_its_marker_is_readable_by_the_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas import SCHEMA_DIR
    from streams import auto_replay
    from streams.codec import RELEASE_FILE, SINGLE_OBJECT_MAGIC

    monkeypatch.setattr(dlq_store, "KafkaProducer", _ReplayProducer)
    _ReplayProducer.sent, _ReplayProducer.details = [], []
    codec = AvroCodec()
    retry_at = datetime(2026, 12, 4, 12, 0, 10, tzinfo=UTC)
    letter_bytes = codec.encode("DeadLetter", make_dead_letter(
        topic="paybus.psp.webhooks", partition=3, offset=7, key=b"PO1", value=b"webhook",
        stage="normaliser", reason="503", attempts=2,
    ).asdict())  # fmt: skip
    # its time is a header: the letter itself is what the release reads
    headers = auto_replay.retry_at_headers(retry_at)
    letter = Letter(dlq_store.decode_letter(codec, letter_bytes, headers))
    assert letter.retry_at == retry_at

    dlq_store.replay("unused:9092", "paybus.dlq", [letter],
                     headers=lambda lt: auto_replay.replay_headers(lt.record),
                     how="replayed automatically")  # fmt: skip
    (topic, key, value), (dlq, marker_key, marker_value) = _ReplayProducer.sent
    assert (topic, key, value) == ("paybus.psp.webhooks", b"PO1", b"webhook")
    assert _ReplayProducer.details[0] == {
        "partition": 3, "headers": [(auto_replay.REPLAY_ATTEMPT_HEADER, b"2")]
    }  # fmt: skip
    # the marker, like the letter, is written with the schema every worker of a rolling
    # upgrade reads: the release's
    released = json.loads((SCHEMA_DIR / RELEASE_FILE).read_text())["schemas"]["DeadLetter"]
    assert marker_value[:2] == SINGLE_OBJECT_MAGIC
    assert marker_value[2:10] == bytes.fromhex(released["fingerprint"])
    assert letter_bytes[2:10] == marker_value[2:10]
    marker = dlq_store.decode_letter(codec, marker_value, headers)  # headers never reopen it
    assert (dlq, marker_key, marker["stage"]) == ("paybus.dlq", letter.id.encode(), "replayed")
    assert marker["retry_at"] is None and marker["reason"].startswith("replayed automatically")
    assert letter.replayed


def test_a_letter_for_an_operator_has_no_retry_at() -> None:
    codec = AvroCodec()
    data = codec.encode("DeadLetter", make_dead_letter(
        topic="paybus.crm.changes", partition=0, offset=7, key=b"pay-1", value=b"x",
        stage="router", reason="refused",
    ).asdict())  # fmt: skip
    assert dlq_store.decode_letter(codec, data, None)["retry_at"] is None


class _FailingSecond(_ReplayProducer):
    """Delivers the first re-injected record; the second's delivery fails (a broker blip)."""

    def send(self, topic: str, *, key: bytes, value: bytes, **kwargs: Any) -> _Sent:
        replayed = [t for t, _key, _value in _ReplayProducer.sent if t != "paybus.dlq"]
        if topic != "paybus.dlq" and len(replayed) == 1:
            raise TimeoutError("no ack within 30 s")
        return super().send(topic, key=key, value=value, **kwargs)


def test_a_replay_failing_half_way_marks_what_it_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # unmarked, the delivered letters were re-injected again by the next try (the ops role's
    # next tick, every few seconds for as long as the later letter failed; a webhook whose PSP
    # still failed then left one more letter, with a schedule of its own, each time)
    monkeypatch.setattr(dlq_store, "KafkaProducer", _FailingSecond)
    _ReplayProducer.sent, _ReplayProducer.details = [], []

    def letter(offset: int) -> Letter:
        return Letter(make_dead_letter(
            topic="paybus.psp.webhooks", partition=0, offset=offset, key=b"PO1", value=b"w",
            stage="normaliser", reason="503",
        ).asdict())  # fmt: skip

    first, second = letter(1), letter(2)
    with pytest.raises(TimeoutError):
        dlq_store.replay("unused:9092", "paybus.dlq", [first, second])
    topics = [topic for topic, _key, _value in _ReplayProducer.sent]
    assert topics == ["paybus.psp.webhooks", "paybus.dlq"]  # the first letter and its marker
    assert first.replayed and not second.resolved
