"""Avro values on the wire: single-object encoding by default, Confluent format with a registry.

Single-object encoding (Avro spec): ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema's canonical form + the binary body. The fingerprint is resolved against
``schemas/`` (the current schemas plus the release history kept in ``schemas/release.json``), so
no registry is needed and older records stay readable after a compatible change.

With a schema registry URL configured the Confluent wire format is used instead: ``00`` + a
4-byte big-endian schema id + the body; ids are registered and looked up over the registry's
REST API (see :mod:`streams.registry_client`).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form
from fastavro.types import Schema

from schemas import SCHEMA_DIR
from streams.avro_fast import Fallback, Writer, compile_writer
from streams.errors import DecodeError, ValidationError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
RELEASE_FILE = "release.json"


def fingerprint(schema: Mapping[str, Any] | Schema) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's parsing canonical form, as 8 little-endian bytes."""
    canonical = to_parsing_canonical_form(parse_schema(dict(schema)))  # type: ignore[arg-type]
    # fastavro gives the fingerprint as the hex of the little-endian byte string.
    return bytes.fromhex(_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaEntry:
    """One schema: its JSON, parsed form and fingerprint."""

    name: str
    json: Mapping[str, Any]
    parsed: Schema
    fingerprint: bytes
    #: The compiled fast path (:mod:`streams.avro_fast`), or None where it does not apply.
    fast: Writer | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SchemaEntry:
        # Parsed with fastavro's hint: a schema without it is parsed again on every read and
        # write (measured: 20 -> 9 us per PspWebhook encode, 19 -> 9 per decode).
        parsed = parse_schema(dict(raw))
        return cls(str(raw["name"]), raw, parsed, fingerprint(raw), compile_writer(parsed))


class SchemaRepository:
    """The schemas in ``schemas/``: current ones by name, current and released by fingerprint."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.directory = directory
        self.current: dict[str, SchemaEntry] = {}
        self.by_fingerprint: dict[bytes, SchemaEntry] = {}
        #: Per name, the released schema and the fields the current one adds to it, where the
        #: current schema is the released one plus optional fields only (see writer_for).
        self.released: dict[str, tuple[SchemaEntry, tuple[str, ...]]] = {}
        for path in sorted(directory.glob("*.avsc")):
            entry = SchemaEntry.from_json(json.loads(path.read_text()))
            self.current[entry.name] = entry
            self.by_fingerprint[entry.fingerprint] = entry
        release = directory / RELEASE_FILE
        if release.exists():
            data = json.loads(release.read_text())
            # The last release's schemas, and every other writer schema records were ever
            # written with (``writers``: earlier releases, and schemas current between two
            # releases): a record in a topic, a retry envelope or a dead letter outlives the
            # schema it was written with, and an upstream publisher upgrades when it does.
            items = [*data.get("schemas", {}).values(), *data.get("writers", ())]
            for item in items:
                entry = SchemaEntry.from_json(item["schema"])
                self.by_fingerprint.setdefault(entry.fingerprint, entry)
            for name, item in data.get("schemas", {}).items():
                released = self.by_fingerprint[SchemaEntry.from_json(item["schema"]).fingerprint]
                added = _added_optional_fields(self.current.get(name), released)
                if added:
                    self.released[name] = (released, added)

    def writer_for(
        self, name: str, record: Mapping[str, Any]
    ) -> tuple[SchemaEntry, Mapping[str, Any]]:
        """The schema to write ``record`` with, and the record as written: the released one
        (without the fields added since) while those fields are all null in it, else the
        current one.

        A worker only reads the writer schemas it knows. During a rolling upgrade (or after a
        rollback) the older workers of a group know the release, not what main added since:
        a record written with the current schema would be dead-lettered by them, though
        nothing in it needs the new fields. Written with the release, it is read by both; a
        record that uses a new field (a cancel's ``reason``) needs the new readers anyway."""
        current = self.get(name)
        older = self.released.get(name)
        if older is None:
            return current, record
        released, added = older
        if any(record.get(f) is not None for f in added):
            return current, record
        return released, {k: v for k, v in record.items() if k not in added}

    def get(self, name: str) -> SchemaEntry:
        try:
            return self.current[name]
        except KeyError:
            known = ", ".join(sorted(self.current))
            raise ValidationError(f"unknown schema {name!r} (known: {known})") from None


class SchemaIdResolver(Protocol):
    """What the Confluent format needs from a registry."""

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int: ...

    def schema_for(self, schema_id: int) -> Mapping[str, Any]: ...


def _added_optional_fields(current: SchemaEntry | None, released: SchemaEntry) -> tuple[str, ...]:
    """The fields ``current`` adds to ``released``, when that is all that differs and each
    is nullable with a null default; otherwise (or when nothing was added) empty."""
    if current is None or current.fingerprint == released.fingerprint:
        return ()

    def shape(field: Mapping[str, Any]) -> str:  # what the binary form depends on
        return json.dumps([field.get("type"), field.get("default")], sort_keys=True)

    now = {f["name"]: f for f in current.json.get("fields", ())}
    then = {f["name"]: f for f in released.json.get("fields", ())}
    if set(then) - set(now) or any(shape(now[n]) != shape(then[n]) for n in then):
        return ()
    added = tuple(n for n in now if n not in then)
    nullable = all(
        "default" in now[n] and now[n]["default"] is None
        and isinstance(now[n].get("type"), list) and "null" in now[n]["type"]
        for n in added
    )  # fmt: skip
    return added if nullable else ()


def _write(entry: SchemaEntry, record: Mapping[str, Any]) -> bytes:
    """The Avro body of ``record``: the fast path when it takes the record, else fastavro
    (which also gives every error, so both paths fail alike)."""
    data = record if type(record) is dict else dict(record)
    if entry.fast is not None:
        try:
            return entry.fast(data)
        except (Fallback, KeyError, TypeError, ValueError, AttributeError):
            pass
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, entry.parsed, dict(data), strict_allow_default=True)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ValidationError(f"record does not fit schema: {exc}") from exc
    return buf.getvalue()


def _read(body: bytes, writer: Schema, reader: Schema | None) -> dict[str, Any]:
    try:
        value = fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise DecodeError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError("Avro body is not a record")
    return value


class AvroCodec:
    """Encodes records with a named schema and decodes any known writer schema into it."""

    def __init__(
        self,
        repository: SchemaRepository | None = None,
        registry: SchemaIdResolver | None = None,
        subject_suffix: str = "-value",
    ) -> None:
        self.repository = repository or SchemaRepository()
        self.registry = registry
        self.subject_suffix = subject_suffix
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, Schema] = {}

    @property
    def wire_format(self) -> str:
        return "confluent" if self.registry is not None else "single-object"

    def validate(self, name: str, record: Mapping[str, Any]) -> None:
        """Raise :class:`ValidationError` when ``record`` does not fit schema ``name``."""
        entry = self.repository.get(name)
        try:
            fastavro.validation.validate(dict(record), entry.parsed, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            raise ValidationError(_validation_message(exc)) from exc

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        if self.registry is None:  # readers know writers by fingerprint: write what they know
            entry, written = self.repository.writer_for(name, record)
            return SINGLE_OBJECT_MAGIC + entry.fingerprint + _write(entry, written)
        entry = self.repository.get(name)
        body = _write(entry, record)
        schema_id = self._ids.get(name)
        if schema_id is None:
            schema_id = self.registry.id_for(f"io.paybus.{name}{self.subject_suffix}", entry.json)
            self._ids[name] = schema_id
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body

    def decode(self, data: bytes, name: str | None = None) -> dict[str, Any]:
        """Decode bytes in either wire format; with ``name``, resolve into that reader schema."""
        reader = self.repository.get(name).parsed if name is not None else None
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError(f"truncated single-object header ({len(data)} bytes)")
            writer = self.repository.by_fingerprint.get(data[2:10])
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
            # Written with the reader's own schema (the usual case): nothing to resolve.
            return _read(data[10:], writer.parsed, None if writer.parsed is reader else reader)
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError(f"truncated Confluent header ({len(data)} bytes)")
            (schema_id,) = struct.unpack(">I", data[1:5])
            return _read(data[5:], self._writer_by_id(schema_id), reader)
        raise DecodeError(f"unknown magic byte(s) {data[:2].hex() or '<empty>'}")

    def _writer_by_id(self, schema_id: int) -> Schema:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self.registry is None:
            raise DecodeError(f"Confluent-framed record (schema id {schema_id}) but no registry")
        try:
            raw = self.registry.schema_for(schema_id)
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} not found in registry: {exc}") from exc
        parsed = parse_schema(dict(raw))
        self._by_id[schema_id] = parsed
        return parsed


def _validation_message(exc: Exception) -> str:
    """One line per field: ``amount_minor: expected null or long, got 'x'``."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return str(exc)
    expected: dict[str, list[str]] = {}
    got: dict[str, Any] = {}
    for err in errors:
        field = str(getattr(err, "field", None) or "record").rsplit(".", 1)[-1]
        schema = getattr(err, "schema", None)
        kind = schema.get("type", schema) if isinstance(schema, dict) else schema
        expected.setdefault(field, []).append(str(kind))
        got[field] = getattr(err, "datum", None)
    return "; ".join(
        f"{field}: expected {' or '.join(kinds)}, got {got[field]!r}"
        for field, kinds in expected.items()
    )
