"""The sandbox's SOQL parser and evaluator, pure (no server)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from connectors.salesforce.sandbox.soql import (
    BoolOp,
    Comparison,
    Not,
    OrderItem,
    SoqlError,
    parse,
)
from connectors.salesforce.sandbox.soql_eval import apply, bind, matches, narrowing

TYPES = {
    "Id": "id",
    "Name": "string",
    "Amount__c": "double",
    "Status__c": "string",
    "Settlement_Date__c": "date",
    "SystemModstamp": "datetime",
    "Paid__c": "boolean",
}


def lookup(name: str) -> tuple[str, str] | None:
    for canonical, ftype in TYPES.items():
        if canonical.lower() == name.lower():
            return canonical, ftype
    return None


def run(text: str, records: list[dict[str, Any]]) -> list[Any]:
    query = bind(parse(text), "Payment__c", lookup)
    return [r["Id"] for r in apply(query, records)]


def test_select_from_only() -> None:
    query = parse("SELECT Id, Name FROM Payment__c")
    assert query.fields == ("Id", "Name") and query.sobject == "Payment__c"
    assert query.where is None and query.order_by == () and query.limit is None


def test_full_statement_keywords_case_insensitive() -> None:
    query = parse(
        "select Id from Payment__c where Status__c = 'paid' and Amount__c > 10 "
        "order by SystemModstamp desc nulls last, Id limit 5 offset 2"
    )
    assert query.where == BoolOp(
        "AND", (Comparison("Status__c", "=", "paid"), Comparison("Amount__c", ">", 10.0))
    )
    assert query.order_by == (OrderItem("SystemModstamp", True, False), OrderItem("Id"))
    assert (query.limit, query.offset) == (5, 2)


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    plain = parse("SELECT Id FROM X WHERE A = 1 OR B = 2 AND C = 3").where
    assert plain == BoolOp(
        "OR",
        (
            Comparison("A", "=", 1.0),
            BoolOp("AND", (Comparison("B", "=", 2.0), Comparison("C", "=", 3.0))),
        ),
    )
    grouped = parse("SELECT Id FROM X WHERE (A = 1 OR B = 2) AND NOT C = 3").where
    assert grouped == BoolOp(
        "AND",
        (
            BoolOp("OR", (Comparison("A", "=", 1.0), Comparison("B", "=", 2.0))),
            Not(Comparison("C", "=", 3.0)),
        ),
    )


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("'it\\'s'", "it's"),
        ("-12.5", -12.5),
        ("TRUE", True),
        ("false", False),
        ("null", None),
        ("2026-11-22", dt.date(2026, 11, 22)),
        ("2026-11-22T00:00:00Z", dt.datetime(2026, 11, 22, tzinfo=dt.UTC)),
        ("2026-11-22T01:02:03.456+0000", dt.datetime(2026, 11, 22, 1, 2, 3, 456000, tzinfo=dt.UTC)),
        ("2026-11-22T02:00:00+02:00", dt.datetime(2026, 11, 22, tzinfo=dt.UTC)),
    ],
)
def test_literals(literal: str, expected: object) -> None:
    where = parse(f"SELECT Id FROM X WHERE F = {literal}").where
    assert isinstance(where, Comparison) and where.value == expected


def test_operators() -> None:
    for op in ("=", "!=", "<", "<=", ">", ">="):
        where = parse(f"SELECT Id FROM X WHERE F {op} 1").where
        assert isinstance(where, Comparison) and where.op == op
    assert parse("SELECT Id FROM X WHERE F <> 1").where == Comparison("F", "!=", 1.0)
    assert parse("SELECT Id FROM X WHERE F IN ('a', 'b')").where == Comparison(
        "F", "IN", ("a", "b")
    )
    assert parse("SELECT Id FROM X WHERE F NOT IN (1)").where == Comparison("F", "NOT IN", (1.0,))
    assert parse("SELECT Id FROM X WHERE F LIKE 'a%'").where == Comparison("F", "LIKE", "a%")


def test_count() -> None:
    query = parse("SELECT COUNT() FROM Payment__c WHERE Amount__c > 0")
    assert query.count and query.fields == ()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SELECT FROM X",
        "SELECT Id X",
        "SELECT Id FROM",
        "SELECT Id, FROM X",
        "SELECT Id FROM X WHERE",
        "SELECT Id FROM X WHERE F = ",
        "SELECT Id FROM X WHERE F ~ 1",
        "SELECT Id FROM X WHERE F IN ()",
        "SELECT Id FROM X WHERE (F = 1",
        "SELECT Id FROM X LIMIT -1",
        "SELECT Id FROM X LIMIT 1.5",
        "SELECT Id FROM X ORDER Id",
        "SELECT Id FROM X WHERE F = 'unterminated",
        "SELECT Id FROM X trailing",
        "SELECT Id FROM X WHERE F = 2026-13-45",
    ],
)
def test_malformed_queries(text: str) -> None:
    with pytest.raises(SoqlError) as err:
        parse(text)
    assert err.value.code == "MALFORMED_QUERY"


def test_bind_resolves_case_and_rejects_unknown_fields() -> None:
    query = bind(parse("SELECT id, amount__c FROM P ORDER BY status__c"), "P", lookup)
    assert query.fields == ("Id", "Amount__c")
    assert query.order_by == (OrderItem("Status__c"),)
    with pytest.raises(SoqlError) as err:
        bind(parse("SELECT Nope__c FROM P"), "P", lookup)
    assert err.value.code == "INVALID_FIELD"


@pytest.mark.parametrize(
    "where",
    [
        "SystemModstamp > '2026-11-22T00:00:00Z'",
        "Amount__c = '10'",
        "Settlement_Date__c = 2026-11-22T00:00:00Z",
        "Status__c = 5",
        "Paid__c = 'true'",
        "Amount__c LIKE '1%'",
    ],
)
def test_bind_type_checks_filter_values(where: str) -> None:
    with pytest.raises(SoqlError) as err:
        bind(parse(f"SELECT Id FROM P WHERE {where}"), "P", lookup)
    assert err.value.code == "INVALID_FIELD"


RECORDS: list[dict[str, Any]] = [
    {
        "Id": "1",
        "Status__c": "Paid",
        "Amount__c": 10.0,
        "Settlement_Date__c": "2026-11-20",
        "SystemModstamp": "2026-11-22T00:00:00.001+0000",
        "Paid__c": True,
    },
    {
        "Id": "2",
        "Status__c": "failed",
        "Amount__c": 30.0,
        "Settlement_Date__c": None,
        "SystemModstamp": "2026-11-22T00:00:00.002+0000",
        "Paid__c": False,
    },
    {
        "Id": "3",
        "Status__c": None,
        "Amount__c": 20.0,
        "Settlement_Date__c": "2026-11-22",
        "SystemModstamp": "2026-11-22T00:00:01.000+0000",
        "Paid__c": False,
    },
]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Status__c = 'paid'", ["1"]),  # string equality ignores case, as in Salesforce
        ("Status__c != 'paid'", ["2", "3"]),  # != matches nulls
        ("Status__c = null", ["3"]),
        ("Status__c != null", ["1", "2"]),
        ("Amount__c >= 20", ["2", "3"]),
        ("Amount__c < 20 OR Amount__c > 25", ["1", "2"]),
        ("Status__c IN ('failed', 'PAID')", ["1", "2"]),
        ("Status__c NOT IN ('failed')", ["1", "3"]),
        ("Status__c LIKE 'f_il%'", ["2"]),
        ("Settlement_Date__c > 2026-11-20", ["3"]),
        ("SystemModstamp > 2026-11-22T00:00:00.001+0000", ["2", "3"]),
        ("SystemModstamp >= 2026-11-22T00:00:01Z", ["3"]),
        ("SystemModstamp < 2026-11-22T01:00:01+01:00", ["1", "2"]),
        ("Paid__c = true", ["1"]),
        ("NOT (Amount__c = 10 OR Amount__c = 30)", ["3"]),
    ],
)
def test_where_evaluation(where: str, expected: list[str]) -> None:
    assert run(f"SELECT Id FROM P WHERE {where}", RECORDS) == expected


def test_order_by_nulls_limit_offset() -> None:
    assert run("SELECT Id FROM P ORDER BY Amount__c DESC", RECORDS) == ["2", "3", "1"]
    assert run("SELECT Id FROM P ORDER BY Status__c", RECORDS) == ["3", "2", "1"]
    assert run("SELECT Id FROM P ORDER BY Status__c DESC", RECORDS) == ["1", "2", "3"]
    assert run("SELECT Id FROM P ORDER BY Status__c NULLS LAST", RECORDS) == ["2", "1", "3"]
    assert run("SELECT Id FROM P ORDER BY Paid__c, Amount__c DESC", RECORDS) == ["2", "3", "1"]
    assert run("SELECT Id FROM P ORDER BY SystemModstamp LIMIT 2", RECORDS) == ["1", "2"]
    assert run("SELECT Id FROM P ORDER BY SystemModstamp LIMIT 1 OFFSET 1", RECORDS) == ["2"]


def test_matches_without_condition() -> None:
    assert matches(None, RECORDS[0])


@pytest.mark.parametrize(
    ("where", "keys"),
    [
        ("Id = 'aB'", [("Id", {"ab"})]),  # lowered: text equality ignores case
        ("id IN ('a', 'b')", [("Id", {"a", "b"})]),
        ("Amount__c > 1 AND Id IN ('a')", [("Id", {"a"})]),  # one AND-ed look-up narrows
        ("Id IN ('a') OR Name = 'n'", [("Id", {"a"}), ("Name", {"n"})]),
        ("Id IN ('a') OR Amount__c > 1", None),  # an OR branch may match any record
        ("NOT Id = 'a'", None),
        ("Id != 'a'", None),
        ("Status__c = 'paid'", None),  # not indexed
    ],
)
def test_narrowing_covers_every_match_or_gives_up(
    where: str, keys: list[tuple[str, set[str]]] | None
) -> None:
    where_ = bind(parse(f"SELECT Id FROM P WHERE {where}"), "Payment__c", lookup).where
    found = narrowing(where_, lambda field: field in ("Id", "Name"))
    assert found == ([(f, frozenset(v)) for f, v in keys] if keys is not None else None)
