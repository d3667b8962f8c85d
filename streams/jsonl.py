"""JSON lines in, schema-shaped records out, with errors that name the line and the field.

Used by ``paybus publish`` (and anything else that takes records as JSON): timestamps are
RFC 3339 strings in JSON and datetimes in Avro, bytes are their UTF-8 text, unknown fields
are refused rather than dropped (a typo in a field name must not silently lose data), and
the schema decides the rest.

Every command that reads a file the user names reads it with :class:`UserLines` (strict
UTF-8, ``-`` for stdin) and parses JSON with :func:`load_json`, so a bad file is reported the same
way everywhere: ``FILE:LINE[:COL]: what is wrong``, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from streams.codec import AvroCodec
from streams.errors import InputError, ValidationError

STDIN = "<stdin>"


def location(source: str | None, line: int, column: int | None = None) -> str:
    """``SOURCE:LINE[:COL]`` (the form editors jump to), or ``line N[, column C]`` unnamed."""
    if source is None:
        return f"line {line}" + (f", column {column}" if column is not None else "")
    return f"{source}:{line}" + (f":{column}" if column is not None else "")


class BadJSON(ValidationError):
    """Text that is not JSON. ``line`` and ``column`` are 1-based and count from the start of
    the file (not from the start of the one line handed to the decoder)."""

    def __init__(self, exc: json.JSONDecodeError, first_line: int = 1) -> None:
        self.line = first_line + exc.lineno - 1
        self.column = exc.colno
        super().__init__(f"bad JSON: {exc.msg}")

    def at(self, source: str | None) -> str:
        """The one wording of a JSON error: ``SOURCE:LINE:COL: bad JSON: <decoder message>``."""
        return f"{location(source, self.line, self.column)}: {self}"


def load_json(text: str, first_line: int = 1) -> Any:
    """``json.loads``, raising :class:`BadJSON` located in the file (``first_line`` is the
    file line ``text`` starts on). Hand it a JSON line without its terminator: with one, a
    line cut short is reported by the decoder at "line 2 column 1", past its end."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJSON(exc, first_line) from None


class UserLines:
    """The lines of a file the user named (``-`` = stdin), decoded as strict UTF-8 one by one.

    Opened at once, so a missing file is an :class:`InputError` before anything happens;
    read lazily, so ``paybus sequence`` still streams stdin. Bytes are decoded here rather
    than by ``open()`` so a binary or UTF-16 file is an :class:`InputError` naming the line of
    its first bad byte, not a ``UnicodeDecodeError`` traceback. Lines are split on ``\\n``
    only (what JSON lines means: ``str.splitlines`` would also split inside a JSON string
    holding U+2028) and come without their ``\\n`` or ``\\r\\n``; a UTF-8 byte-order mark
    (some Windows editors write one) is dropped.
    """

    def __init__(self, path: str | Path) -> None:
        self.name = STDIN if str(path) == "-" else str(path)
        try:
            self._raw: IO[bytes] = sys.stdin.buffer if self.name == STDIN else open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise InputError(f"{self.name}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.name}: is a directory, not a file") from None
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read ({exc.strerror or exc})") from None

    def __iter__(self) -> Iterator[str]:
        try:
            for number, raw in enumerate(self._raw, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{self.name}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                        f"at column {exc.start + 1}: {exc.reason})"
                    ) from None
                if number == 1:
                    text = text.removeprefix("\ufeff")
                yield text.removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read ({exc.strerror or exc})") from None
        finally:
            if self._raw is not sys.stdin.buffer:
                self._raw.close()


def read_json(path: str | Path) -> Any:
    """The one JSON document in a user's file, or :class:`InputError` saying where it is bad."""
    source = UserLines(path)
    try:
        return load_json("\n".join(source))
    except BadJSON as exc:
        raise InputError(exc.at(source.name)) from None


@dataclass(frozen=True)
class ParsedLine:
    """One input line: the record, or the reason it was refused."""

    number: int
    record: dict[str, Any] | None
    error: str | None = None
    column: int | None = None

    def where(self, source: str | None) -> str:
        """``SOURCE:LINE`` (``:COL`` too when the error has one), for the error message."""
        return location(source, self.number, self.column)


def parse_timestamp(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp with an offset (naive times are ambiguous and refused), or a
    whole number of milliseconds since the epoch (Avro's own form of the field)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int) and not isinstance(value, bool):
        parsed = datetime.fromtimestamp(value / 1000, UTC)
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


def _bytes_fields(schema: Mapping[str, Any]) -> set[str]:
    names = set()
    for field in schema["fields"]:
        types = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if "bytes" in types or any(isinstance(t, dict) and t.get("type") == "bytes" for t in types):
            names.add(field["name"])
    return names


def text_of_bytes(value: bytes) -> str:
    """Bytes as JSON can carry them: their UTF-8 text (a webhook body reads as itself), any
    byte that is not UTF-8 kept as a lone surrogate, so :func:`to_record` gets the same bytes
    back from the string."""
    return value.decode("utf-8", "surrogateescape")


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
    for name in _bytes_fields(schema) & set(record):
        if isinstance(record[name], str):  # as text_of_bytes wrote it
            record[name] = record[name].encode("utf-8", "surrogateescape")
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
            obj = load_json(line.rstrip("\r\n"), number)
        except BadJSON as exc:
            yield ParsedLine(exc.line, None, str(exc), exc.column)
            continue
        try:
            record = to_record(codec, schema_name, obj)
            if check is not None:
                check(record)
        except ValidationError as exc:
            yield ParsedLine(number, None, str(exc))
        else:
            yield ParsedLine(number, record)
