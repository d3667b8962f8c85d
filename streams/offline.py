"""``paybus sequence``: the sequencer run over JSON lines, without a broker.

The same engine the Faust agent uses, fed from a file, so an operator can replay a payment's
history (from the DLQ, a PSP export, a bug report) and see exactly what the bus would decide.
Bad lines are reported and skipped rather than aborting the run: one malformed export line
should not hide the verdict on the thousand good ones; the exit status still says something
was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from streams.jsonl import BadJSON, load_json, location
from streams.sequencing import AggregateState, Event, InvalidEvent, Judgement, Sequencer

__all__ = ["run_sequence"]


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")


def _outcome(judgement: Judgement) -> dict[str, Any]:
    event = judgement.event
    return {
        "type": "outcome",
        "event_id": event.event_id,
        "aggregate_id": event.aggregate_id,
        "outcome": judgement.outcome.value,
        "reason": judgement.reason,
    }


def _parse(line: str, number: int) -> Event:
    data = load_json(line.rstrip("\r\n"), number)
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
    return Event.from_dict(data)


def run_sequence(
    lines: Iterable[str],
    out: TextIO,
    err: TextIO,
    *,
    max_seen: int = 64,
    max_held: int = 32,
    source: str | None = None,
) -> int:
    """Judge every event line in order; print outcomes, then each aggregate's final state.

    Output (JSON lines on ``out``): one ``outcome`` record per judgement, so a held event that
    later applies or turns stale gets a second line, then one ``final`` record per aggregate in
    order of first appearance. Invalid lines go to ``err`` as ``line N: reason`` (1-based), or
    ``SOURCE:N: reason`` given the file's name as ``source`` (the form editors jump to); a
    line that is not JSON gets its column too (``SOURCE:N:COL: bad JSON: ...``).
    Returns 0, or 1 if any line was invalid.
    """
    sequencer = Sequencer(max_seen=max_seen, max_held=max_held)
    states: dict[str, AggregateState] = {}
    status = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = _parse(line, number)
        except BadJSON as exc:
            err.write(exc.at(source) + "\n")
            status = 1
            continue
        except InvalidEvent as exc:
            err.write(f"{location(source, number)}: {exc}\n")
            status = 1
            continue
        result = sequencer.judge(states.get(event.aggregate_id), event)
        states[event.aggregate_id] = result.state
        for judgement in result.judgements:
            _emit(out, _outcome(judgement))
    for aggregate_id, state in states.items():
        _emit(
            out,
            {
                "type": "final",
                "aggregate_id": aggregate_id,
                "status": state.status,
                "held": [event.event_id for event in state.held],
            },
        )
    return status
