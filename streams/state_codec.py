"""A compact binary form of :class:`AggregateState`, the value the sequencer's table holds.

The table keeps one value per tracked aggregate, in memory and in its changelog, and rewrites
it once per batch the aggregate appears in; its JSON dict form cost ~2 kB resident per
aggregate. This form is what the table stores instead (``bytes``, ~40-80 B for a typical
payment), so it leaves out whatever the reader already knows or can rebuild:

* the aggregate id: it is the table key, and :func:`decode_state` takes it back;
* names: aggregate type, method and statuses are one byte each (codes below), with an escape
  to a literal string, so a status added later still round-trips before it gets a code;
* times: seconds since the epoch when whole (PSP timestamps are), else microseconds, as a
  zig-zag varint with one bit saying which — lossless either way;
* event ids: front-coded (the length shared with the previous id, then the rest), the first
  against the aggregate id, because PSP ids share long prefixes (``evt_1N...``, ``EV0...``)
  and generated ids often embed the aggregate id;
* ``last_event_id``: almost always one of the seen ids, so an index into them.

Layout (version 1): ``version, flags, type, [method], [status], [latest_at], seq,
n_seen, seen..., last_event_id, [n_held, held...]`` where ``flags`` says which optional
parts are present; :data:`HELD` sits in that second byte so :func:`has_held` can skip states
with nothing held without decoding them (the reconcile timer scans every key).

Codes are append-only within a version: a new status goes at the end of :data:`STATUSES`.
A change of layout gets a new version byte, and :func:`decode_state` keeps reading the old.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.sequencing_state import AggregateState, Event

__all__ = ["VERSION", "StateCodecError", "decode_state", "encode_state", "has_held"]

VERSION = 1
TYPES = ("payment", "mandate", "refund")
METHODS = ("direct_debit", "card")
STATUSES = (
    "created",
    "pending_customer_approval",
    "pending_submission",
    "submitted",
    "confirmed",
    "paid_out",
    "cancelled",
    "charged_back",
    "failed",
    "partially_refunded",
    "refunded",
    "active",
    "expired",
    "suspended",
    "pending",
    "rejected",
    "reversed",
)
_LITERAL = 0xFF  # a name without a code follows as a string
_NONE = 0xFE  # an absent optional name (a held event's method)

# flags (second byte)
_METHOD, _STATUS, _LATEST, HELD = 1, 2, 4, 8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_S = timedelta(seconds=1)
_ONE_US = timedelta(microseconds=1)


class StateCodecError(ValueError):
    """Bytes that are not a state this module wrote (bad version, truncated, corrupt)."""


def _codes(names: tuple[str, ...]) -> dict[str, int]:
    return {name: code for code, name in enumerate(names)}


_TYPE_CODES, _METHOD_CODES, _STATUS_CODES = _codes(TYPES), _codes(METHODS), _codes(STATUSES)


# --- writing -------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _blob(out: bytearray, data: bytes) -> None:
    _varint(out, len(data))
    out += data


def _name(out: bytearray, value: str | None, codes: dict[str, int]) -> None:
    if value is None:
        out.append(_NONE)
        return
    code = codes.get(value)
    if code is None:
        out.append(_LITERAL)
        _blob(out, value.encode())
    else:
        out.append(code)


def _time(out: bytearray, value: datetime) -> None:
    delta = value - _EPOCH
    # Whole seconds (the PSPs' resolution) in ~5 bytes; anything finer exactly, in ~8.
    n = (delta // _ONE_US) << 1 | 1 if delta.microseconds else (delta // _ONE_S) << 1
    _varint(out, n << 1 if n >= 0 else (-n << 1) - 1)  # zig-zag: times before 1970 too


def _front(out: bytearray, previous: bytes, current: bytes) -> None:
    """``current`` as (bytes shared with ``previous``, the rest)."""
    limit = min(len(previous), len(current))
    # The first differing byte, from the highest set bit of the XOR of the common lengths
    # (a few C calls instead of a Python loop over ~20 shared bytes).
    diff = int.from_bytes(previous[:limit], "big") ^ int.from_bytes(current[:limit], "big")
    shared = limit - (diff.bit_length() + 7) // 8
    _varint(out, shared)
    _blob(out, current[shared:])


def encode_state(state: AggregateState) -> bytes:
    """The compact form of ``state`` (without its aggregate id, the table key)."""
    out = bytearray((VERSION, 0))
    flags = 0
    _name(out, state.aggregate_type, _TYPE_CODES)
    if state.method is not None:
        flags |= _METHOD
        _name(out, state.method, _METHOD_CODES)
    if state.status is not None:
        flags |= _STATUS
        _name(out, state.status, _STATUS_CODES)
    if state.latest_at is not None:
        flags |= _LATEST
        _time(out, state.latest_at)
    _varint(out, state.seq)
    anchor = state.aggregate_id.encode()
    _varint(out, len(state.seen))
    previous = anchor
    index: dict[str, int] = {}
    for i, event_id in enumerate(state.seen):
        current = event_id.encode()
        _front(out, previous, current)
        previous = current
        index[event_id] = i
    last = state.last_event_id
    if last is None:
        out.append(0)
    elif last in index:
        _varint(out, index[last] + 2)
    else:
        out.append(1)
        _front(out, anchor, last.encode())
    if state.held:
        flags |= HELD
        _varint(out, len(state.held))
        for event in state.held:
            _held(out, anchor, event)
    out[1] = flags
    return bytes(out)


def _held(out: bytearray, anchor: bytes, event: Event) -> None:
    _front(out, anchor, event.event_id.encode())
    _name(out, event.status, _STATUS_CODES)
    _time(out, event.occurred_at)
    _blob(out, event.source.encode())
    _name(out, event.method, _METHOD_CODES)
    _varint(out, len(event.attributes))
    for key, value in event.attributes.items():
        _blob(out, key.encode())
        _blob(out, value.encode())


# --- reading -------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        try:
            value = self.data[self.pos]
        except IndexError:
            raise StateCodecError("truncated state") from None
        self.pos += 1
        return value

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def blob(self) -> bytes:
        size = self.varint()
        end = self.pos + size
        if end > len(self.data):
            raise StateCodecError("truncated state")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def text(self) -> str:
        try:
            return self.blob().decode()
        except UnicodeDecodeError as exc:
            raise StateCodecError(f"corrupt string: {exc}") from None

    def name(self, names: tuple[str, ...]) -> str | None:
        code = self.byte()
        if code == _NONE:
            return None
        if code == _LITERAL:
            return self.text()
        if code >= len(names):
            raise StateCodecError(f"unknown name code {code}")
        return names[code]

    def time(self) -> datetime:
        z = self.varint()
        n = -((z + 1) >> 1) if z & 1 else z >> 1
        if n & 1:
            return _EPOCH + timedelta(microseconds=n >> 1)
        return _EPOCH + timedelta(seconds=n >> 1)

    def front(self, previous: bytes) -> bytes:
        shared = self.varint()
        if shared > len(previous):
            raise StateCodecError("corrupt front-coded id")
        return previous[:shared] + self.blob()


def has_held(data: bytes) -> bool:
    """Whether the encoded state holds any event (without decoding it)."""
    return len(data) > 1 and bool(data[1] & HELD)


def decode_state(aggregate_id: str, data: bytes) -> AggregateState:
    """The state :func:`encode_state` wrote for the aggregate ``aggregate_id``.

    Raises :class:`StateCodecError` for bytes it cannot read (never a partial state).
    """
    if not data or data[0] != VERSION:
        version = data[0] if data else None
        raise StateCodecError(f"unsupported state version {version!r}")
    r = _Reader(data)
    r.pos = 1
    try:
        return _decode_v1(aggregate_id, r)
    except (ValueError, OverflowError) as exc:  # InvalidEvent is a ValueError too
        if isinstance(exc, StateCodecError):
            raise
        raise StateCodecError(f"corrupt state: {exc}") from None


def _decode_v1(aggregate_id: str, r: _Reader) -> AggregateState:
    flags = r.byte()
    aggregate_type = r.name(TYPES)
    if aggregate_type is None:
        raise StateCodecError("state without an aggregate type")
    method = r.name(METHODS) if flags & _METHOD else None
    status = r.name(STATUSES) if flags & _STATUS else None
    latest_at = r.time() if flags & _LATEST else None
    seq = r.varint()
    anchor = aggregate_id.encode()
    previous = anchor
    ids: list[str] = []
    for _ in range(r.varint()):
        previous = r.front(previous)
        ids.append(previous.decode())
    tag = r.varint()
    last: str | None
    if tag == 0:
        last = None
    elif tag == 1:
        last = r.front(anchor).decode()
    elif tag - 2 < len(ids):
        last = ids[tag - 2]
    else:
        raise StateCodecError(f"last event index {tag - 2} beyond {len(ids)} seen ids")
    held: list[Event] = []
    if flags & HELD:
        for _ in range(r.varint()):
            event_id = r.front(anchor).decode()
            held_status = r.name(STATUSES)
            occurred_at = r.time()
            source = r.text()
            held_method = r.name(METHODS)
            attributes = {r.text(): r.text() for _ in range(r.varint())}
            if held_status is None:
                raise StateCodecError("held event without a status")
            held.append(
                Event(
                    event_id=event_id,
                    aggregate_id=aggregate_id,
                    aggregate_type=aggregate_type,
                    status=held_status,
                    occurred_at=occurred_at,
                    source=source,
                    method=held_method,
                    attributes=attributes,
                )
            )
    if r.pos != len(r.data):
        raise StateCodecError(f"{len(r.data) - r.pos} trailing bytes after the state")
    return AggregateState(
        aggregate_id=aggregate_id,
        aggregate_type=aggregate_type,
        method=method,
        status=status,
        latest_at=latest_at,
        last_event_id=last,
        seq=seq,
        seen=dict.fromkeys(ids),
        held=held,
    )
