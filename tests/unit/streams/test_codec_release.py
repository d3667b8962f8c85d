"""Records are written with the released schema while they use nothing added since: a worker
of the release (a rolling upgrade, a rollback) reads them, where the current schema's
fingerprint would be unknown to it and the record dead-lettered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas import SCHEMA_DIR
from streams.codec import (
    RELEASE_FILE,
    SINGLE_OBJECT_MAGIC,
    AvroCodec,
    SchemaEntry,
    SchemaRepository,
    _added_optional_fields,
)
from streams.errors import DecodeError

RELEASE = json.loads((SCHEMA_DIR / RELEASE_FILE).read_text())


def _change(**extra: Any) -> dict[str, Any]:
    return {
        "change_id": "chg-1", "aggregate_id": "pay-1", "aggregate_type": "payment",
        "intent": "cancel", "occurred_at": datetime(2026, 12, 5, tzinfo=UTC),
        "source": "crm", "metadata": {}, **extra,
    }  # fmt: skip


@pytest.fixture
def release_worker(tmp_path: Path) -> AvroCodec:
    """The codec of a worker of the release: the released schemas are all it knows."""
    for name, item in RELEASE["schemas"].items():
        (tmp_path / f"{name}.avsc").write_text(json.dumps(item["schema"]))
    return AvroCodec(SchemaRepository(tmp_path))


def test_a_record_using_nothing_new_is_written_with_the_release(release_worker: AvroCodec) -> None:
    data = AvroCodec().encode("CrmChange", _change())
    released = RELEASE["schemas"]["CrmChange"]["fingerprint"]
    assert data[:2] == SINGLE_OBJECT_MAGIC and data[2:10] == bytes.fromhex(released)
    assert release_worker.decode(data, "CrmChange")["change_id"] == "chg-1"
    now = AvroCodec().decode(data, "CrmChange")  # and the current worker reads it too
    assert now["reason"] is None and now["mandate_ref"] is None and now["intent"] == "cancel"


def test_a_record_using_a_new_field_needs_the_new_readers(release_worker: AvroCodec) -> None:
    data = AvroCodec().encode("CrmChange", _change(reason="payment page link expired"))
    current = SchemaRepository().get("CrmChange").fingerprint
    assert data[2:10] == current
    assert AvroCodec().decode(data, "CrmChange")["reason"] == "payment page link expired"
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        release_worker.decode(data, "CrmChange")


def test_only_added_nullable_fields_allow_the_release_to_be_written() -> None:
    repo = SchemaRepository()
    assert repo.released["PaymentCommand"][1] == ("reason",)
    assert "StatusUpdate" not in repo.released  # unchanged since the release
    current = repo.get("CrmChange")

    def variant(change: Any) -> SchemaEntry:
        raw = json.loads(json.dumps(current.json))
        change(raw["fields"])
        return SchemaEntry.from_json(raw)

    def retyped(fields: list[dict[str, Any]]) -> None:
        fields[0]["type"] = "bytes"

    def required(fields: list[dict[str, Any]]) -> None:
        fields.append({"name": "extra", "type": "string"})

    released = repo.released["CrmChange"][0]
    assert _added_optional_fields(variant(retyped), released) == ()
    assert _added_optional_fields(variant(required), released) == ()
    assert _added_optional_fields(released, released) == ()
