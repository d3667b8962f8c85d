"""The sequencer's recently used states, kept decoded next to the bytes they came from.

Decoding a table value (:func:`~streams.state_codec.decode_state`) was the largest share of
the sequencing agent's own CPU after the Faust and Kafka paths it shares with any consumer
(~13 us of ~65 us per event, profiled offline on the bench workload), and an aggregate's
events tend to come in bursts (a webhook, its retry, the CRM's echo), so the state just
written is often the next one read.

Each entry is ``(bytes, state)``. A lookup hands the state back only when the table still
holds exactly those bytes, so the cache needs no invalidation: a changelog recovery, a
rebalance or anything else that changes the table simply misses, and the bytes are decoded
as before. The engine never mutates a state it is given (it copies first), so sharing the
decoded object between calls is safe. The size is bounded (least recently written first
out), so resident memory per tracked aggregate does not grow with it.
"""

from __future__ import annotations

from streams.agents.sequencer_records import load_state
from streams.sequencing_state import AggregateState


class DecodedStates:
    """A bounded map of aggregate id -> (stored bytes, decoded state)."""

    __slots__ = ("_entries", "hits", "limit", "misses")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[str, tuple[bytes, AggregateState]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, aggregate_id: str, stored: bytes | None) -> AggregateState | None:
        """The state ``stored`` holds (decoded only when it is not the remembered one)."""
        if not stored:
            return None
        entry = self._entries.get(aggregate_id)
        if entry is not None and entry[0] == stored:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return load_state(aggregate_id, stored)

    def remember(self, aggregate_id: str, stored: bytes, state: AggregateState) -> None:
        """Note that the table now holds ``stored`` for ``state`` (most recent last)."""
        if self.limit <= 0:
            return
        entries = self._entries
        entries.pop(aggregate_id, None)
        entries[aggregate_id] = (stored, state)
        if len(entries) > self.limit:
            del entries[next(iter(entries))]

    def clear(self) -> None:
        self._entries.clear()
