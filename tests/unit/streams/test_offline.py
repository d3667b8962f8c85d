"""``paybus sequence`` offline: JSON lines in, outcomes and final states out, bad lines named."""

from __future__ import annotations

import io
import json
from typing import Any

from streams.offline import run_sequence


def line(event_id: str, status: str, second: int, **extra: Any) -> str:
    record: dict[str, Any] = {
        "event_id": event_id,
        "aggregate_id": "p1",
        "aggregate_type": "payment",
        "status": status,
        "occurred_at": f"2026-03-01T12:00:{second:02d}Z",
        "source": "stripe",
    }
    record.update(extra)
    return json.dumps(record)


def sequence(lines: list[str], **kwargs: int) -> tuple[int, list[dict[str, Any]], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = run_sequence(lines, out, err, **kwargs)
    return code, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue().splitlines()


def test_good_lines_give_outcomes_then_final_states() -> None:
    lines = [
        line("e1", "created", 0),
        line("e3", "submitted", 2),  # held until pending_submission arrives
        line("e2", "pending_submission", 1),
        line("e2", "pending_submission", 1),  # redelivered
        line("m1", "active", 5, aggregate_id="m-1", aggregate_type="mandate"),
        line("e9", "cancelled", 9, aggregate_id="p2", method="card"),
        line("e10", "confirmed", 10, aggregate_id="p2", method="card"),
        line("e4", "paid_out", 4),  # held: confirmed never comes
    ]
    code, records, errors = sequence(lines)
    assert code == 0 and errors == []
    outcomes = [(r["event_id"], r["outcome"]) for r in records if r["type"] == "outcome"]
    assert outcomes == [
        ("e1", "applied"),
        ("e3", "held"),
        ("e2", "applied"),
        ("e3", "applied"),  # the held event's second line
        ("e2", "duplicate"),
        ("m1", "applied"),
        ("e9", "applied"),
        ("e10", "rejected"),
        ("e4", "held"),
    ]
    rejected = next(r for r in records if r.get("event_id") == "e10")
    assert rejected == {
        "type": "outcome",
        "event_id": "e10",
        "aggregate_id": "p2",
        "outcome": "rejected",
        "reason": "illegal transition cancelled -> confirmed: unreachable",
    }
    finals = [r for r in records if r["type"] == "final"]
    assert finals == [
        {"type": "final", "aggregate_id": "p1", "status": "submitted", "held": ["e4"]},
        {"type": "final", "aggregate_id": "m-1", "status": "active", "held": []},
        {"type": "final", "aggregate_id": "p2", "status": "cancelled", "held": []},
    ]
    assert [r["type"] for r in records] == ["outcome"] * 9 + ["final"] * 3


def test_bad_lines_are_reported_and_the_rest_still_judged() -> None:
    lines = [
        line("e1", "created", 0),
        "{not json",
        "",
        line("e2", "settled", 1),
        line("e3", "created", 1, aggregate_type="invoice"),
        line("e4", "created", 1, method="cash"),
        json.dumps({"event_id": "e5", "aggregate_id": "p1", "aggregate_type": "payment"}),
        line("e6", "created", 1, occurred_at="2026-03-01T12:00:01"),
        line("e7", "created", 1, occurred_at="not a time"),
        "[1, 2]",
        "   ",
        line("e8", "pending_submission", 3),
    ]
    code, records, errors = sequence(lines)
    assert code == 1
    assert [e.split(":", 1)[0] for e in errors] == [
        "line 2, column 2",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
        "line 10",
    ]
    assert (
        errors[0] == "line 2, column 2: bad JSON: Expecting property name enclosed in double quotes"
    )
    assert "unknown status 'settled'" in errors[1]
    assert "unknown aggregate_type 'invoice'" in errors[2]
    assert "unknown method 'cash'" in errors[3]
    assert "missing field" in errors[4]
    assert "naive timestamp" in errors[5]
    assert "bad timestamp" in errors[6]
    assert "expected a JSON object" in errors[7]
    assert records == [
        {
            "type": "outcome",
            "event_id": "e1",
            "aggregate_id": "p1",
            "outcome": "applied",
            "reason": "first event of the aggregate",
        },
        {
            "type": "outcome",
            "event_id": "e8",
            "aggregate_id": "p1",
            "outcome": "applied",
            "reason": "created -> pending_submission",
        },
        {"type": "final", "aggregate_id": "p1", "status": "pending_submission", "held": []},
    ]


def test_a_json_line_cut_short_is_located_on_its_own_line() -> None:
    # lines as a file yields them, terminators included: the decoder alone would put the error
    # on "line 2 column 1" of the one line, past its end
    cut = line("e2", "pending_submission", 1)[:-1]
    code, _, errors = sequence([line("e1", "created", 0) + "\n", cut + "\n"], source="h.jsonl")
    assert code == 1
    assert errors == [f"h.jsonl:2:{len(cut) + 1}: bad JSON: Expecting ',' delimiter"]


def test_evicted_held_event_is_reported_rejected() -> None:
    lines = [line("e1", "created", 0), line("e3", "submitted", 3), line("e4", "confirmed", 4)]
    code, records, _ = sequence(lines, max_held=1)
    assert code == 0
    evicted = [r for r in records if r.get("event_id") == "e3"]
    assert [r["outcome"] for r in evicted] == ["held", "rejected"]
    assert evicted[1]["reason"].startswith("evicted:")
    assert records[-1] == {
        "type": "final",
        "aggregate_id": "p1",
        "status": "created",
        "held": ["e4"],
    }


def test_empty_input() -> None:
    assert sequence([]) == (0, [], [])


def test_cli_names_the_file_and_line_of_a_bad_event(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    path = tmp_path / "history.jsonl"
    path.write_text(line("e1", "created", 1) + "\n{not json\n" + line("e2", "settled", 3) + "\n")
    result = CliRunner().invoke(app, ["sequence", "-i", str(path)])
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0] == f"{path}:2:2: bad JSON: Expecting property name enclosed in double quotes"
    assert errors[1].startswith(f"{path}:3: ") and "unknown status 'settled'" in errors[1]
    outcomes = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o["outcome"] for o in outcomes if o["type"] == "outcome"] == ["applied"]
