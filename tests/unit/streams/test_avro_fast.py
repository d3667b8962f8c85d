"""The compiled Avro writer agrees with fastavro byte for byte wherever it writes at all."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.avro_fast import Fallback, compile_writer
from streams.codec import AvroCodec, SchemaRepository
from streams.errors import ValidationError

REPO = SchemaRepository()
NAMES = sorted(REPO.current)

_times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5))), min_value=datetime(1960, 1, 1))
_longs = st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-70, 70)


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Values of ``schema`` (a parsed fastavro schema) that fastavro accepts."""
    if isinstance(schema, list):
        return st.one_of(*(values(branch) for branch in schema))
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return _times | _longs
    if kind == "null":
        return st.none()
    if kind == "string":
        return (
            st.text(max_size=80)
            | st.text(alphabet="a", min_size=62, max_size=66)  # the one-byte length boundary
            | st.text(alphabet="é€😀a", min_size=60, max_size=200)
        )
    if kind == "bytes":
        return st.binary(max_size=150)
    if kind == "boolean":
        return st.booleans()
    if kind == "int":
        return st.integers(-(1 << 31), (1 << 31) - 1)
    if kind == "long":
        return _longs
    if kind == "map":
        return st.dictionaries(st.text(max_size=20), values(schema["values"]), max_size=4)
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})
    raise AssertionError(f"no strategy for {schema}")


def fastavro_bytes(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, REPO.get(name).parsed, dict(record), strict_allow_default=True)
    return buf.getvalue()


def test_every_schema_we_ship_gets_a_fast_writer() -> None:
    assert all(REPO.get(name).fast is not None for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_same_bytes_as_fastavro(name: str, data: st.DataObject) -> None:
    entry = REPO.get(name)
    record = data.draw(values(entry.parsed))
    expected = fastavro_bytes(name, record)
    assert entry.fast is not None
    assert entry.fast(record) == expected
    # Written with the release while nothing added since is used (test_codec_release.py).
    writer, written = REPO.writer_for(name, record)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer.parsed, dict(written), strict_allow_default=True)
    encoded = AvroCodec(REPO).encode(name, record)
    assert encoded[2:10] == writer.fingerprint and encoded.endswith(buf.getvalue())


def _status_update(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "evt_1", "aggregate_id": "pay-1", "aggregate_type": "payment",
        "from_status": None, "to_status": "submitted",
        "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "seq": 1,
        "inferred": False, "source": "stripe", "psp": "stripe", "psp_object_id": None,
        "payment_id": "pay-1", "crm_record_id": None, "settlement_date": None, "reason": None,
        "attributes": {"currency": "EUR"},
    }  # fmt: skip
    record.update(changes)
    return record


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": True},  # a bool where a long goes
        {"occurred_at": datetime(2026, 1, 2, 3, 4, 5)},  # naive: fastavro reads local time
        {"unexpected": "x"},  # an extra field
        {"psp": ("string", "stripe")},  # tuple notation names the union branch
        {"seq": 1 << 70},  # out of range
        {"attributes": {"n": 1}},  # a map value of the wrong type
    ],
)
def test_declines_what_it_is_not_sure_of_and_the_codec_defers_to_fastavro(
    changes: dict[str, Any],
) -> None:
    record = _status_update(**changes)
    fast = REPO.get("StatusUpdate").fast
    assert fast is not None
    with pytest.raises((Fallback, KeyError)):
        fast(record)
    codec = AvroCodec(REPO)
    try:
        expected = fastavro_bytes("StatusUpdate", record)
    except Exception:
        with pytest.raises(ValidationError):
            codec.encode("StatusUpdate", record)
    else:
        assert codec.encode("StatusUpdate", record).endswith(expected)


def test_a_missing_field_with_a_default_is_written_by_fastavro() -> None:
    record = _status_update()
    del record["reason"]
    codec = AvroCodec(REPO)
    assert codec.encode("StatusUpdate", record).endswith(fastavro_bytes("StatusUpdate", record))


def test_unsupported_constructs_get_no_fast_writer() -> None:
    enum = {"type": "enum", "name": "Colour", "symbols": ["RED"]}
    for field_type in (enum, "double", ["string", "long"], ["null", "string", "long"]):
        schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
        assert compile_writer(fastavro.parse_schema(schema)) is None
