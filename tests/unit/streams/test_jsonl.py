"""JSON lines -> records, with the line and field named on every error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.codec import AvroCodec
from streams.errors import InputError, ValidationError
from streams.jsonl import UserLines, parse_lines, parse_timestamp, read_json

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
    assert errors[3] == "bad JSON: Expecting property name enclosed in double quotes"
    assert parsed[1].where("f.jsonl") == "f.jsonl:3:2"  # the column joins the location
    assert parsed[2].where("f.jsonl") == "f.jsonl:4"
    assert "amount_minor" in (errors[4] or "")
    assert "unknown field(s): colour" in (errors[5] or "")
    assert "no UTC offset" in (errors[6] or "")
    assert "change_id" in (errors[7] or "")
    assert "JSON object" in (errors[8] or "")


# --- reading the user's file ----------------------------------------------------------------


def test_user_lines_split_on_newline_only_and_drop_crlf_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"b": "x\xe2\x80\xa8y"}\n\n')
    assert list(UserLines(path)) == ['{"a": 1}', '{"b": "x\u2028y"}', ""]


def test_a_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    lines = UserLines(path)
    with pytest.raises(InputError) as caught:
        list(lines)
    assert str(caught.value) == (
        f"{path}:2: not UTF-8 text (byte 0xe9 at column 8: invalid continuation byte)"
    )


def test_a_missing_file_fails_when_opened(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file$"):
        UserLines(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        UserLines(tmp_path)


def test_read_json_locates_bad_json_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fixed.json"
    path.write_text('{\n  "a": 1,\n  "b": tru\n}\n')
    with pytest.raises(InputError) as caught:
        read_json(path)
    assert str(caught.value) == f"{path}:3:8: bad JSON: Expecting value"
    path.write_text('{"a": [1]}\n')
    assert read_json(path) == {"a": [1]}


def test_a_timestamp_may_be_epoch_milliseconds_avros_own_form() -> None:
    assert parse_timestamp(1_700_000_000_123, "at") == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    with pytest.raises(ValidationError, match="expected an RFC 3339 string"):
        parse_timestamp(True, "at")
