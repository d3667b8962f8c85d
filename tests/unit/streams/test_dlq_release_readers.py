"""A letter the bus replays by itself stays readable by the release (a rolling upgrade, a
rollback): its ``retry_at`` travels in a Kafka header, not in a schema field the release does
not know. Read by the release's ops worker and CLI, it is an ordinary letter, pending for an
operator; had it needed the new readers, the release's DLQ gauge skipped it (no alert for a
webhook never normalised) and its ``paybus dlq list`` failed on it until retention dropped it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schemas import SCHEMA_DIR
from streams import auto_replay, dlq_store
from streams.agents.common import send_dead_letter
from streams.codec import RELEASE_FILE, AvroCodec, SchemaRepository

RELEASE = json.loads((SCHEMA_DIR / RELEASE_FILE).read_text())
RETRY_AT = datetime(2026, 12, 5, 12, 0, 10, tzinfo=UTC)


@pytest.fixture
def release_worker(tmp_path: Path) -> AvroCodec:
    """The codec of a worker (or CLI) of the release: the released schemas are all it knows."""
    for name, item in RELEASE["schemas"].items():
        (tmp_path / f"{name}.avsc").write_text(json.dumps(item["schema"]))
    return AvroCodec(SchemaRepository(tmp_path))


class _App:
    """What ``send_dead_letter`` needs of the app: the DLQ's name and a send to capture."""

    def __init__(self) -> None:
        self.topic_map = SimpleNamespace(dlq=SimpleNamespace(name="paybus.dlq"))
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})


def _scheduled_letter() -> tuple[bytes, list[tuple[str, bytes]]]:
    """A normaliser's letter with a ``retry_at``, as it goes onto the DLQ: (value, headers)."""
    app = _App()
    message = SimpleNamespace(topic="paybus.psp.webhooks", partition=3, offset=7, key=b"PO1",
                              value=b"webhook")  # fmt: skip
    asyncio.run(send_dead_letter(
        app, SimpleNamespace(message=message), stage="normaliser", aggregate_id=None,  # type: ignore[arg-type]
        reason="gocardless answered 503", retry_at=RETRY_AT,
    ))  # fmt: skip
    [sent] = app.sent
    value = AvroCodec().encode("DeadLetter", sent["value"].asdict())  # as the Faust codec does
    return value, list(sent.get("headers") or [])


def test_the_release_reads_a_scheduled_letter_as_one_for_an_operator(
    release_worker: AvroCodec,
) -> None:
    value, _headers = _scheduled_letter()
    record = release_worker.decode(value, "DeadLetter")
    assert (record["dead_letter_id"], record["stage"]) == ("paybus.psp.webhooks:3:7", "normaliser")
    assert record["value"] == b"webhook"


def test_this_version_reads_the_retry_at_from_the_header() -> None:
    value, headers = _scheduled_letter()
    assert (auto_replay.RETRY_AT_HEADER, b"%d" % (RETRY_AT.timestamp() * 1000)) in headers
    record = dlq_store.decode_letter(AvroCodec(), value, headers)
    assert record["retry_at"] == RETRY_AT and dlq_store.Letter(record).retry_at == RETRY_AT
    # no header (a letter for an operator, or one written by the release): none
    assert dlq_store.decode_letter(AvroCodec(), value, None)["retry_at"] is None


@pytest.mark.parametrize("garbled", [b"soon", b"-", b"\xff", b""])
def test_a_garbled_retry_at_leaves_the_letter_to_an_operator(garbled: bytes) -> None:
    assert auto_replay.retry_at_of([(auto_replay.RETRY_AT_HEADER, garbled)]) is None


def test_a_letter_written_while_retry_at_was_a_field_stays_readable(tmp_path: Path) -> None:
    # main wrote scheduled letters with DeadLetter.retry_at before it became a header: they
    # are in DLQs (open ones too), so their schema is kept among the writers
    [between] = [w for w in RELEASE["writers"] if w["name"] == "DeadLetter"]
    assert "retry_at" in {f["name"] for f in between["schema"]["fields"]}
    (tmp_path / "DeadLetter.avsc").write_text(json.dumps(between["schema"]))
    then = AvroCodec(SchemaRepository(tmp_path))
    value = then.encode("DeadLetter", {
        "dead_letter_id": "paybus.psp.webhooks:3:7", "original_topic": "paybus.psp.webhooks",
        "original_partition": 3, "original_offset": 7, "key": b"PO1", "value": b"webhook",
        "aggregate_id": None, "stage": "normaliser", "reason": "503", "error_log": ["503"],
        "attempts": 1, "retry_at": RETRY_AT, "failed_at": RETRY_AT,
    })  # fmt: skip
    assert value[2:10].hex() == between["fingerprint"]
    record = dlq_store.decode_letter(AvroCodec(), value, None)
    # read as a letter for an operator (pending, alerted): never lost
    assert (record["dead_letter_id"], record["retry_at"]) == ("paybus.psp.webhooks:3:7", None)
