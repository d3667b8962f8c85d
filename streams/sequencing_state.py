"""The sequencer's records: a canonical event and one aggregate's state, with their JSON forms.

Kept apart from the engine (``streams.sequencing``) so the rules read on their own. Both
records serialise to JSON-safe dicts (str/int/list/dict only): events travel as JSON lines in
``paybus sequence`` and the state lives in a changelog-backed table, where every byte is written
once per event, so the state's form is compact (held events drop the fields the state already
carries, absent values are left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from streams.errors import PaybusError
from streams.lifecycles import PAYMENT_METHODS, is_legal, lifecycle_for, stage_index

__all__ = [
    "REASON_GIVEN_ATTRIBUTE",
    "REFUSED_ATTRIBUTE",
    "WHOLE_SECOND",
    "AggregateState",
    "Event",
    "InvalidEvent",
    "format_time",
    "gives_reason",
    "parse_time",
    "passed",
]

#: On an event that answers a command the PSP refused (its value: the operation, ``cancel``):
#: the event reports the status the aggregate still has. Repeating the current status, it is
#: applied anyway (a re-assertion, see streams/sequencing.py) so the CRM, whose record shows
#: the request staff made, is told the request was refused and what the payment is.
REFUSED_ATTRIBUTE = "paybus_refused"
#: On the PSP's answer to a command that gave a reason the PSP does not report back (its value:
#: the operation, ``cancel``): the answer carries the reason. When the PSP's webhook reported
#: the same status first (no reason), the answer is applied anyway as a re-assertion with the
#: reason, so the CRM record says why (see streams/sequencing.py, rule 1).
REASON_GIVEN_ATTRIBUTE = "paybus_reason_given"


class InvalidEvent(PaybusError, ValueError):
    """An event that cannot be judged: unknown type/status/method, naive time, missing field.

    Also a ValueError, so code parsing untrusted input can catch the one familiar type.
    """


def parse_time(value: object, *, name: str = "occurred_at") -> datetime:
    """A tz-aware UTC datetime from an RFC 3339 string (or a datetime); naive times are refused.

    A naive time would compare wrongly (or raise) against the aware times already stored, and
    ordering by time is the whole point of the sequencer.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"bad timestamp {name}={value!r}") from None
    else:
        raise InvalidEvent(f"bad timestamp {name}={value!r}: expected an RFC 3339 string")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidEvent(f"naive timestamp {name}={value!r}: an offset (Z or +hh:mm) is needed")
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, microseconds only when present."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@cache
def _vocabulary(aggregate_type: str) -> tuple[frozenset[str], bool]:
    """(statuses, has methods) of a type, computed once: ``Lifecycle.statuses`` builds a new
    set on every access, and every event entering the sequencer is validated against it."""
    lc = lifecycle_for(aggregate_type)
    return lc.statuses, bool(lc.methods)


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """A canonical event about one aggregate, validated on construction.

    Validation happens here rather than in the engine so that an unknown status or a naive
    timestamp is refused where it enters (a decode error the agent can DLQ), and the engine only
    ever compares well-formed events. ``method`` only matters for payments (None means the
    default, direct debit); for other types it is carried but ignored.
    """

    event_id: str
    aggregate_id: str
    aggregate_type: str
    status: str
    occurred_at: datetime
    source: str
    method: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here, not only in from_dict: the agent builds events from decoded Avro, where
        # an empty id fits the schema and would be applied under the key "".
        for name in ("event_id", "aggregate_id", "source"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidEvent(f"field {name!r} must be a non-empty string, got {value!r}")
        try:
            statuses, has_methods = _vocabulary(self.aggregate_type)
        except ValueError as exc:
            raise InvalidEvent(str(exc)) from None
        if self.status not in statuses:
            raise InvalidEvent(f"unknown status {self.status!r} for {self.aggregate_type}")
        if has_methods and self.method is not None and self.method not in PAYMENT_METHODS:
            known = ", ".join(PAYMENT_METHODS)
            raise InvalidEvent(f"unknown method {self.method!r} (known: {known})")
        object.__setattr__(self, "occurred_at", parse_time(self.occurred_at))
        attributes = dict(self.attributes)
        for key, value in attributes.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidEvent(f"attribute {key!r} must map a string to a string")
        object.__setattr__(self, "attributes", attributes)

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """The JSON-safe form; ``compact`` leaves out the aggregate fields and absent values
        (the state's form of a held event, whose aggregate the state already names)."""
        data: dict[str, Any] = {"event_id": self.event_id}
        if not compact:
            data["aggregate_id"] = self.aggregate_id
            data["aggregate_type"] = self.aggregate_type
        data["status"] = self.status
        data["occurred_at"] = format_time(self.occurred_at)
        data["source"] = self.source
        if self.method is not None or not compact:
            data["method"] = self.method
        if self.attributes or not compact:
            data["attributes"] = dict(self.attributes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **defaults: Any) -> Event:
        """An event from its dict form; ``defaults`` fill fields the dict leaves out (the
        state passes its aggregate id and type). Raises InvalidEvent saying what is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidEvent(f"expected an object, got {type(data).__name__}")
        merged = {**defaults, **{k: v for k, v in data.items() if v is not None}}
        attributes = merged.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise InvalidEvent("field 'attributes' must be an object of strings")
        if "occurred_at" not in merged:
            raise InvalidEvent("missing field 'occurred_at'")
        event_id = _text(merged, "event_id")
        aggregate_id = _text(merged, "aggregate_id")
        aggregate_type = _text(merged, "aggregate_type")
        status = _text(merged, "status")
        source = _text(merged, "source")
        assert event_id and aggregate_id and aggregate_type and status and source
        return cls(
            event_id=event_id,
            aggregate_id=aggregate_id,
            aggregate_type=aggregate_type,
            status=status,
            occurred_at=parse_time(merged["occurred_at"]),
            source=source,
            method=_text(merged, "method", required=False),
            attributes=attributes,
        )


@dataclass(slots=True)
class AggregateState:
    """What the sequencer remembers about one aggregate between events.

    ``seen`` is a dict used as an insertion-ordered set (O(1) lookups, oldest id first, bounded
    by the sequencer); ``held`` is ordered by ``occurred_at``, oldest first, which is the order
    held events are judged again in. ``method`` is None until an event names one (a payment
    without a method follows the direct-debit rules). The engine copies a state before
    changing it, so a caller's state is never mutated behind its back.
    """

    aggregate_id: str
    aggregate_type: str
    method: str | None = None
    status: str | None = None
    latest_at: datetime | None = None
    last_event_id: str | None = None
    seq: int = 0
    seen: dict[str, None] = field(default_factory=dict)
    held: list[Event] = field(default_factory=list)

    def copy(self) -> AggregateState:
        """An independent copy (events are immutable, so the containers are all that is copied)."""
        return AggregateState(
            aggregate_id=self.aggregate_id,
            aggregate_type=self.aggregate_type,
            method=self.method,
            status=self.status,
            latest_at=self.latest_at,
            last_event_id=self.last_event_id,
            seq=self.seq,
            seen=dict(self.seen),
            held=list(self.held),
        )

    def to_dict(self) -> dict[str, Any]:
        """The compact JSON-safe form stored in the table (absent values left out)."""
        data: dict[str, Any] = {"aggregate_id": self.aggregate_id, "type": self.aggregate_type}
        if self.method is not None:
            data["method"] = self.method
        if self.status is not None:
            data["status"] = self.status
        if self.latest_at is not None:
            data["latest_at"] = format_time(self.latest_at)
        if self.last_event_id is not None:
            data["last_event_id"] = self.last_event_id
        data["seq"] = self.seq
        data["seen"] = list(self.seen)
        if self.held:
            data["held"] = [event.to_dict(compact=True) for event in self.held]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AggregateState:
        """The state back from :meth:`to_dict` (also accepts ``aggregate_type`` for ``type``)."""
        aggregate_id = str(data["aggregate_id"])
        aggregate_type = str(data["type"] if "type" in data else data["aggregate_type"])
        latest = data.get("latest_at")
        return cls(
            aggregate_id=aggregate_id,
            aggregate_type=aggregate_type,
            method=data.get("method"),
            status=data.get("status"),
            latest_at=parse_time(latest, name="latest_at") if latest is not None else None,
            last_event_id=data.get("last_event_id"),
            seq=int(data.get("seq", 0)),
            seen=dict.fromkeys(str(i) for i in data.get("seen", ())),
            held=[
                Event.from_dict(e, aggregate_id=aggregate_id, aggregate_type=aggregate_type)
                for e in data.get("held", ())
            ],
        )


#: How much older than the latest time the answer giving a reason may be and still re-assert.
WHOLE_SECOND = timedelta(seconds=1)


def gives_reason(event: Event) -> str | None:
    """The operation whose reason ``event`` carries (``REASON_GIVEN_ATTRIBUTE``), if it does."""
    if not event.attributes.get("reason"):
        return None
    return event.attributes.get(REASON_GIVEN_ATTRIBUTE)


def passed(state: AggregateState, status: str) -> bool:
    """Whether the aggregate has moved on from ``status``: an earlier main-line stage, or a
    status its current one follows directly (a paid-out payment has passed ``confirmed``, a
    refunded one too; a cancelled one never passed it, whatever path the lifecycle allows
    through a failure and a resubmission)."""
    kind, method, current = state.aggregate_type, state.method, state.status
    if current is None or status == current:
        return False
    cur_stage, stage = stage_index(kind, current), stage_index(kind, status)
    if cur_stage is not None and stage is not None:
        return stage < cur_stage
    return is_legal(kind, method, status, current)
