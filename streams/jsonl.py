"""JSON lines in, schema-shaped records out, with errors that name the line and the field.

Used by ``paybus publish`` (and anything else that takes records as JSON): timestamps are
RFC 3339 strings in JSON and datetimes in Avro, unknown fields are refused rather than dropped
(a typo in a field name must not silently lose data), and the schema decides the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.codec import AvroCodec
from streams.errors import ValidationError


@dataclass(frozen=True)
class ParsedLine:
    """One input line: the record, or the reason it was refused."""

    number: int
    record: dict[str, Any] | None
    error: str | None = None


def parse_timestamp(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp with an offset (naive times are ambiguous and refused)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{field}: not an RFC 3339 timestamp: {value!r}") from None
    else:
        raise ValidationError(f"{field}: expected an RFC 3339 string, got {value!r}")
    if parsed.tzinfo is None:
        raise ValidationError(f"{field}: timestamp has no UTC offset: {value!r}")
    return parsed


def _timestamp_fields(schema: Mapping[str, Any]) -> set[str]:
    names = set()
    for field in schema["fields"]:
        types = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if any(
            isinstance(t, dict) and t.get("logicalType", "").startswith("timestamp") for t in types
        ):
            names.add(field["name"])
    return names


def to_record(codec: AvroCodec, schema_name: str, obj: Any) -> dict[str, Any]:
    """Coerce one JSON value into a record of ``schema_name`` or raise ValidationError."""
    if not isinstance(obj, dict):
        raise ValidationError(f"expected a JSON object, got {type(obj).__name__}")
    schema = codec.repository.get(schema_name).json
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}")
    record = dict(obj)
    for name in _timestamp_fields(schema) & set(record):
        if record[name] is not None:
            record[name] = parse_timestamp(record[name], name)
    codec.validate(schema_name, record)
    return record


def parse_lines(
    codec: AvroCodec,
    schema_name: str,
    lines: Iterable[str],
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[ParsedLine]:
    """Parse JSON lines (blank lines skipped), one :class:`ParsedLine` per non-blank line;
    ``check`` (raising ValidationError) runs on each record that fits the schema."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield ParsedLine(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        try:
            record = to_record(codec, schema_name, obj)
            if check is not None:
                check(record)
        except ValidationError as exc:
            yield ParsedLine(number, None, str(exc))
        else:
            yield ParsedLine(number, record)
