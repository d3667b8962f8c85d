"""A parser and evaluator for the SOQL subset our connector speaks.

Grammar (keywords case-insensitive)::

    SELECT (COUNT() | field, ...) FROM Object
      [WHERE cond] [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]
    cond    := term (OR term)*          term := factor (AND factor)*
    factor  := NOT factor | '(' cond ')' | field op literal | field [NOT] IN (literal, ...)
    op      := = != <> < <= > >= LIKE
    literal := 'string' | number | true | false | null | 2026-11-22 | 2026-11-22T00:00:00Z

It is deliberately strict where real Salesforce is strict (quoted datetimes, quoted numbers,
unknown fields are errors), so a query that works here does not fail first time against an org.
Pure functions only: the unit tests exercise it without a server.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Union

from .schema import parse_datetime

Literal = str | float | bool | None | dt.date | dt.datetime

_KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC"}
    | {"NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL"}
)
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
  | (?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+))(?![\w.])
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


class SoqlError(Exception):
    """A query Salesforce would refuse; ``code`` is the REST ``errorCode``."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Comparison:
    """``field op value``; for IN / NOT IN the value is a tuple of literals."""

    field: str
    op: str
    value: Literal | tuple[Literal, ...]


@dataclass(frozen=True)
class BoolOp:
    """AND / OR over two or more conditions."""

    op: str
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """NOT over one condition."""

    item: Condition


Condition = Union[Comparison, BoolOp, Not]  # noqa: UP007 - forward references need Union


@dataclass(frozen=True)
class OrderItem:
    """One ORDER BY key; ``nulls_first`` defaults to Salesforce's (first for ASC)."""

    field: str
    descending: bool = False
    nulls_first: bool | None = None


@dataclass(frozen=True)
class Query:
    """A parsed SELECT statement."""

    fields: tuple[str, ...]
    sobject: str
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None
    count: bool = False


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[_Tok]:
    """Split a query into tokens; keywords are upper-cased, everything else kept as written."""
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise SoqlError(f"unexpected token: '{text[pos : pos + 10]}' at column {pos + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            value = match.group()
            if kind == "ident" and value.upper() in _KEYWORDS:
                kind, value = "kw", value.upper()
            tokens.append(_Tok(kind, value, pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        idx = self.i + offset
        return self.tokens[idx] if idx < len(self.tokens) else None

    def at_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "kw" and tok.text in words

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SoqlError(f"unexpected end of query, expected {what}")
        self.i += 1
        return tok

    def expect_kw(self, word: str) -> None:
        tok = self.next(word)
        if tok.kind != "kw" or tok.text != word:
            raise SoqlError(f"unexpected token: '{tok.text}', expected {word}")

    def expect_punct(self, char: str) -> None:
        tok = self.next(f"'{char}'")
        if tok.kind != "punct" or tok.text != char:
            raise SoqlError(f"unexpected token: '{tok.text}', expected '{char}'")

    def ident(self, what: str) -> str:
        tok = self.next(what)
        if tok.kind != "ident":
            raise SoqlError(f"unexpected token: '{tok.text}', expected {what}")
        return tok.text

    def integer(self, what: str) -> int:
        tok = self.next(what)
        if tok.kind != "number" or not tok.text.isdigit():
            raise SoqlError(
                f"unexpected token: '{tok.text}', {what} must be a non-negative integer"
            )
        return int(tok.text)

    def query(self) -> Query:
        self.expect_kw("SELECT")
        count = False
        fields: list[str] = []
        tok = self.peek()
        nxt = self.peek(1)
        if tok and tok.kind == "ident" and tok.text.upper() == "COUNT" and nxt and nxt.text == "(":
            self.i += 2
            self.expect_punct(")")
            count = True
        else:
            fields.append(self.ident("a field name"))
            while (tok := self.peek()) is not None and tok.text == ",":
                self.i += 1
                fields.append(self.ident("a field name"))
        self.expect_kw("FROM")
        sobject = self.ident("an object name")
        where = None
        if self.at_kw("WHERE"):
            self.i += 1
            where = self.condition()
        order: list[OrderItem] = []
        if self.at_kw("ORDER"):
            self.i += 1
            self.expect_kw("BY")
            order.append(self.order_item())
            while (tok := self.peek()) is not None and tok.text == ",":
                self.i += 1
                order.append(self.order_item())
        limit = offset = None
        if self.at_kw("LIMIT"):
            self.i += 1
            limit = self.integer("LIMIT")
        if self.at_kw("OFFSET"):
            self.i += 1
            offset = self.integer("OFFSET")
            if offset > 2000:
                raise SoqlError("Maximum SOQL offset allowed is 2000", "NUMBER_OUTSIDE_VALID_RANGE")
        if (tok := self.peek()) is not None:
            raise SoqlError(f"unexpected token: '{tok.text}'")
        return Query(tuple(fields), sobject, where, tuple(order), limit, offset, count)

    def order_item(self) -> OrderItem:
        name = self.ident("a field name")
        descending = False
        if self.at_kw("ASC", "DESC"):
            descending = self.next("ASC").text == "DESC"
        nulls_first = None
        if self.at_kw("NULLS"):
            self.i += 1
            tok = self.next("FIRST or LAST")
            if tok.text not in ("FIRST", "LAST"):
                raise SoqlError(f"unexpected token: '{tok.text}', expected FIRST or LAST")
            nulls_first = tok.text == "FIRST"
        return OrderItem(name, descending, nulls_first)

    def condition(self) -> Condition:
        items = [self.term()]
        while self.at_kw("OR"):
            self.i += 1
            items.append(self.term())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def term(self) -> Condition:
        items = [self.factor()]
        while self.at_kw("AND"):
            self.i += 1
            items.append(self.factor())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def factor(self) -> Condition:
        if self.at_kw("NOT"):
            self.i += 1
            return Not(self.factor())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            cond = self.condition()
            self.expect_punct(")")
            return cond
        name = self.ident("a field name")
        tok = self.next("an operator")
        if tok.kind == "op":
            op = "!=" if tok.text == "<>" else tok.text
            return Comparison(name, op, self.literal())
        if tok.kind == "kw" and tok.text == "LIKE":
            return Comparison(name, "LIKE", self.literal())
        if tok.kind == "kw" and tok.text in ("IN", "NOT"):
            op = "IN"
            if tok.text == "NOT":
                self.expect_kw("IN")
                op = "NOT IN"
            self.expect_punct("(")
            values = [self.literal()]
            while (nxt := self.peek()) is not None and nxt.text == ",":
                self.i += 1
                values.append(self.literal())
            self.expect_punct(")")
            return Comparison(name, op, tuple(values))
        raise SoqlError(f"unexpected token: '{tok.text}', expected an operator")

    def literal(self) -> Literal:
        tok = self.next("a value")
        if tok.kind == "string":
            return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), tok.text[1:-1])
        if tok.kind == "number":
            return float(tok.text)
        if tok.kind == "date":
            try:
                return dt.date.fromisoformat(tok.text)
            except ValueError:
                raise SoqlError(f"invalid date: {tok.text}") from None
        if tok.kind == "datetime":
            try:
                return parse_datetime(tok.text)
            except ValueError:
                raise SoqlError(f"invalid datetime: {tok.text}") from None
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE", "NULL"):
            return {"TRUE": True, "FALSE": False, "NULL": None}[tok.text]
        raise SoqlError(f"unexpected token: '{tok.text}', expected a value")


def parse(text: str) -> Query:
    """Parse one SOQL statement or raise :class:`SoqlError` (``MALFORMED_QUERY``)."""
    return _Parser(text).query()
