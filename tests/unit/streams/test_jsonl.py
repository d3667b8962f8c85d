"""JSON lines -> records, with the line and field named on every error."""

from __future__ import annotations

from streams.codec import AvroCodec
from streams.jsonl import parse_lines

GOOD = (
    '{"change_id": "c1", "aggregate_id": "pay-1", "aggregate_type": "payment", '
    '"intent": "create_payment", "occurred_at": "2026-11-22T10:00:00Z", "source": "crm", '
    '"amount_minor": 1000, "currency": "EUR"}'
)


def test_good_and_bad_lines() -> None:
    lines = [
        GOOD,
        "",
        "{not json",
        GOOD.replace('"amount_minor": 1000', '"amount_minor": "1000"'),
        GOOD.replace('"source": "crm"', '"source": "crm", "colour": "red"'),
        GOOD.replace("2026-11-22T10:00:00Z", "2026-11-22T10:00:00"),
        GOOD.replace('"change_id": "c1", ', ""),
        "[1, 2]",
    ]
    parsed = list(parse_lines(AvroCodec(), "CrmChange", lines))
    assert [p.number for p in parsed] == [1, 3, 4, 5, 6, 7, 8]
    assert parsed[0].record is not None and parsed[0].error is None
    errors = {p.number: p.error for p in parsed[1:]}
    assert "invalid JSON" in (errors[3] or "")
    assert "amount_minor" in (errors[4] or "")
    assert "unknown field(s): colour" in (errors[5] or "")
    assert "no UTC offset" in (errors[6] or "")
    assert "change_id" in (errors[7] or "")
    assert "JSON object" in (errors[8] or "")
