"""A faster Avro binary writer for the shapes our schemas use, with fastavro as the judge.

``fastavro.schemaless_writer`` costs ~19 us for a ``StatusUpdate`` (17 fields): it walks the
parsed schema for every record and, for each nullable field, tries the union's branches in
turn. The sequencer writes one per applied transition, the normaliser one per event, so that
walk was a visible share of both stages' CPU. :func:`compile_writer` turns a parsed record
schema into one straight-line Python function (as ``dataclasses`` builds ``__init__``), ~4x
faster.

It only ever takes the easy road. Any value it is not sure of (a missing field, an extra one,
a bool where a long goes, a naive datetime, a tuple-named union branch, a number out of
range) raises :class:`Fallback` and the caller writes the record with fastavro instead, so
the bytes written and the errors raised are fastavro's in every case; the fast path only has
to agree with fastavro where it succeeds, which the tests check schema by schema. Schemas
with a type it does not know (enums, fixed, floats, named references, wider unions) get no
fast writer at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["Fallback", "Writer", "compile_writer"]

Writer = Callable[[Mapping[str, Any]], bytes]

_LONG = (-(1 << 63), (1 << 63) - 1)
_INT = (-(1 << 31), (1 << 31) - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Fallback(Exception):
    """The fast path declines this record; write it with fastavro."""


class _Unsupported(Exception):
    """A schema construct the compiler does not handle."""


def _zigzag(out: bytearray, n: Any, bounds: tuple[int, int] = _LONG) -> None:
    """An Avro int/long: zig-zag, then base-128 varint, least significant group first."""
    if type(n) is not int or not bounds[0] <= n <= bounds[1]:
        raise Fallback
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _millis(value: Any) -> Any:
    """fastavro's timestamp-millis conversion for aware datetimes (naive ones it reads as
    local time: left to fastavro); ints pass through."""
    if type(value) is datetime:
        if value.tzinfo is None:
            raise Fallback
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return value


def _bytes(out: bytearray, value: Any) -> None:
    if type(value) is not bytes:
        raise Fallback
    _zigzag(out, len(value))
    out += value


def _boolean(out: bytearray, value: Any) -> None:
    if type(value) is not bool:
        raise Fallback
    out.append(1 if value else 0)


_NAMESPACE: dict[str, Any] = {
    "Fallback": Fallback,
    "_zigzag": _zigzag,
    "_millis": _millis,
    "_bytes": _bytes,
    "_boolean": _boolean,
    "_INT": _INT,
}


class _Compiler:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def emit(self, schema: Any, expr: str, pad: str) -> None:
        """Lines writing the value ``expr`` (a local name) of type ``schema``."""
        add = self.lines.append
        if isinstance(schema, list):
            if len(schema) != 2 or "null" not in schema or schema.index("null") != 0:
                raise _Unsupported(f"union {schema}")
            add(f"{pad}if {expr} is None:")
            add(f"{pad}    out.append(0)")
            add(f"{pad}else:")
            add(f"{pad}    if type({expr}) is tuple: raise Fallback")
            add(f"{pad}    out.append(2)")
            self.emit(schema[1], expr, pad + "    ")
            return
        kind = schema.get("type") if isinstance(schema, dict) else schema
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical is not None and (kind, logical) != ("long", "timestamp-millis"):
            raise _Unsupported(f"logical type {logical}")
        if kind == "null":
            add(f"{pad}if {expr} is not None: raise Fallback")
        elif kind == "string":  # inlined: most fields are strings, most shorter than 64 B
            data = self.var()
            add(f"{pad}if not isinstance({expr}, str): raise Fallback")
            add(f"{pad}{data} = {expr}.encode()")
            add(f"{pad}if len({data}) < 64: out.append(len({data}) << 1)")
            add(f"{pad}else: _zigzag(out, len({data}))")
            add(f"{pad}out += {data}")
        elif kind == "bytes":
            add(f"{pad}_bytes(out, {expr})")
        elif kind == "boolean":
            add(f"{pad}_boolean(out, {expr})")
        elif kind == "int":
            add(f"{pad}_zigzag(out, {expr}, _INT)")
        elif kind == "long" and logical:
            add(f"{pad}_zigzag(out, _millis({expr}))")
        elif kind == "long":  # inlined for the small non-negative ones (sequence numbers)
            add(f"{pad}if type({expr}) is int and 0 <= {expr} < 64: out.append({expr} << 1)")
            add(f"{pad}else: _zigzag(out, {expr})")
        elif kind == "record":
            self.record(schema, expr, pad)
        elif kind in ("map", "array"):
            self.container(schema, kind, expr, pad)
        else:
            raise _Unsupported(f"type {kind}")

    def record(self, schema: Mapping[str, Any], expr: str, pad: str) -> None:
        add = self.lines.append
        fields = schema["fields"]
        add(f"{pad}if not isinstance({expr}, dict) or len({expr}) != {len(fields)}:")
        add(f"{pad}    raise Fallback")
        for field in fields:
            name = self.var()
            add(f"{pad}{name} = {expr}[{field['name']!r}]")
            self.emit(field["type"], name, pad)

    def container(self, schema: Mapping[str, Any], kind: str, expr: str, pad: str) -> None:
        add = self.lines.append
        item = self.var()
        if kind == "map":
            key = self.var()
            add(f"{pad}if not isinstance({expr}, dict): raise Fallback")
            add(f"{pad}if {expr}:")
            add(f"{pad}    _zigzag(out, len({expr}))")
            add(f"{pad}    for {key}, {item} in {expr}.items():")
            self.emit("string", key, pad + "        ")
            self.emit(schema["values"], item, pad + "        ")
        else:
            add(f"{pad}if type({expr}) is not list: raise Fallback")
            add(f"{pad}if {expr}:")
            add(f"{pad}    _zigzag(out, len({expr}))")
            add(f"{pad}    for {item} in {expr}:")
            self.emit(schema["items"], item, pad + "        ")
        add(f"{pad}out.append(0)")


def compile_writer(parsed: Any) -> Writer | None:
    """A writer for the parsed record schema ``parsed``, or None if it uses a construct the
    fast path does not cover. The writer raises :class:`Fallback` to decline a record."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    compiler = _Compiler()
    try:
        compiler.record(parsed, "record", "    ")
    except _Unsupported:
        return None
    source = "\n".join(
        ["def write(record):", "    out = bytearray()", *compiler.lines, "    return bytes(out)"]
    )
    namespace = dict(_NAMESPACE)
    exec(compile(source, f"<avro writer {parsed.get('name')}>", "exec"), namespace)
    writer: Writer = namespace["write"]
    return writer
