"""A thin wrapper over simple-salesforce: paged SOQL, sObject Collections, Composite.

Every failure leaves as a :mod:`connectors.errors` error (mapped in :mod:`.error_map`), and
operators need the API usage the org reports. A response hook on the client's session sees
every HTTP call, so the wrapper counts API calls exactly (paging included) and keeps the last
``Sforce-Limit-Info``.

The Composite resource (``POST composite``) runs up to 25 subrequests, at most 5 of them
queries or sObject Collections, as **one** API call: :meth:`SalesforceClient.query_many` and
:meth:`SalesforceClient.update_records_many` send five SOQL reads or five 200-record updates
(1,000 records) per call. A failed subrequest is mapped exactly like the same call made alone.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError

from connectors.errors import ConnectorError, PermanentError, TransientError

from .error_map import NAME, RETRYABLE_CODES, error_id, map_error, subrequest_error

#: sObject Collections take at most this many records per call.
MAX_COLLECTION = 200
#: Subrequests per Composite call, and how many of them may be queries or sObject Collections.
MAX_SUBREQUESTS = 25
MAX_QUERY_OR_COLLECTION = 5
_LIMIT_RE = re.compile(r"api-usage=(\d+)/(\d+)")


@dataclass(frozen=True)
class ApiUsage:
    """The org's daily API allowance as of the last response."""

    used: int
    limit: int


@dataclass(frozen=True)
class RecordResult:
    """Outcome of one record of a collection call: ``error`` is None on success."""

    record_id: str | None
    error: ConnectorError | None = None
    #: An upsert that inserted the record (instead of updating one).
    created: bool = False

    @property
    def success(self) -> bool:
        return self.error is None


class SalesforceClient:
    """SOQL and collection updates over one simple-salesforce client, with error mapping."""

    def __init__(self, sf: Salesforce, timeout_s: float = 30.0) -> None:
        self.sf = sf
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._calls = 0
        self._usage: ApiUsage | None = None
        self._last = threading.local()
        sf.session.hooks.setdefault("response", []).append(self._on_response)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.response = response
        match = _LIMIT_RE.search(response.headers.get("Sforce-Limit-Info", ""))
        with self._lock:
            self._calls += 1
            if match:
                self._usage = ApiUsage(int(match[1]), int(match[2]))

    @property
    def api_calls(self) -> int:
        """HTTP calls made through this client so far (each one counts against the org)."""
        return self._calls

    @property
    def api_usage(self) -> ApiUsage | None:
        """The org's ``api-usage=N/LIMIT`` from the last response, if it sent one."""
        return self._usage

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self._last.response = None
        try:
            return getattr(self.sf, operation)(*args, timeout=self.timeout_s, **kwargs)
        except (SalesforceError, requests.RequestException) as err:
            raise map_error(err, getattr(self._last, "response", None)) from err

    def query(self, soql: str) -> list[dict[str, Any]]:
        """All records of a SOQL query, following ``nextRecordsUrl`` page by page."""
        return list(self.iter_query(soql))

    def iter_query(self, soql: str) -> Iterator[dict[str, Any]]:
        """Records of a query as they arrive, one API call per page."""
        page = self._call("query", soql)
        while True:
            for record in page["records"]:
                yield {k: v for k, v in record.items() if k != "attributes"}
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = self._call("query_more", page["nextRecordsUrl"], identifier_is_url=True)

    def describe(self, object_name: str) -> dict[str, Any]:
        """``GET sobjects/{object}/describe``: the object's fields as this user sees them."""
        found = self._call("restful", f"sobjects/{object_name}/describe")
        if not isinstance(found, Mapping) or not isinstance(found.get("fields"), list):
            raise PermanentError(f"unexpected describe answer: {found!r:.200}", psp=NAME)
        return dict(found)

    def tooling_query(self, soql: str) -> list[dict[str, Any]]:
        """The records of a Tooling API query (one page: the setup objects asked for are few)."""
        page = self._call("toolingexecute", f"query/?q={quote(soql, safe='')}")
        if not isinstance(page, Mapping) or not isinstance(page.get("records"), list):
            raise PermanentError(f"unexpected tooling answer: {page!r:.200}", psp=NAME)
        return [{k: v for k, v in r.items() if k != "attributes"} for r in page["records"]]

    def update_records(
        self, object_name: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        """Update records by ``Id`` with ``PATCH composite/sobjects`` (allOrNone false).

        One call per :data:`MAX_COLLECTION` records; results come back in input order. A
        record's own error fails that record only; an error of the whole call raises.
        """
        results: list[RecordResult] = []
        for start in range(0, len(records), MAX_COLLECTION):
            chunk = records[start : start + MAX_COLLECTION]
            body = _collection_body(object_name, chunk)
            answer = self._call("restful", "composite/sobjects", method="PATCH", json=body)
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise PermanentError(
                    f"unexpected composite/sobjects answer: {answer!r:.200}", psp=NAME
                )
            results.extend(_record_result(item) for item in answer)
        return results

    def composite(
        self, subrequests: Sequence[tuple[str, str, Any]], all_or_none: bool = False
    ) -> list[tuple[int, Any]]:
        """Run ``(method, path, body)`` subrequests as one ``POST composite`` call.

        ``path`` is relative to the versioned base (``query/?q=...``, ``composite/sobjects``).
        At most :data:`MAX_SUBREQUESTS`, of which :data:`MAX_QUERY_OR_COLLECTION` queries or
        collections. One API call; a failure of the whole call raises like any other call.
        Returns each subrequest's ``(httpStatusCode, body)`` in input order.
        """
        heavy = sum(1 for _, path, _ in subrequests if _is_query_or_collection(path))
        if not subrequests or len(subrequests) > MAX_SUBREQUESTS or heavy > MAX_QUERY_OR_COLLECTION:
            raise ValueError(
                f"a composite takes 1-{MAX_SUBREQUESTS} subrequests, at most "
                f"{MAX_QUERY_OR_COLLECTION} queries or collections (got {len(subrequests)}, "
                f"{heavy})"
            )
        base = f"/services/data/v{self.sf.sf_version}/"
        body = {
            "allOrNone": all_or_none,
            "compositeRequest": [
                {"method": method, "url": base + path, "referenceId": f"r{n}"}
                | ({} if sub_body is None else {"body": sub_body})
                for n, (method, path, sub_body) in enumerate(subrequests)
            ],
        }
        answer = self._call("restful", "composite", method="POST", json=body)
        items = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
        by_ref = {
            item.get("referenceId"): item for item in items or () if isinstance(item, Mapping)
        }
        results: list[tuple[int, Any]] = []
        for n in range(len(subrequests)):
            item = by_ref.get(f"r{n}")
            if item is None:
                raise PermanentError(f"composite answer lacks r{n}: {answer!r:.200}", psp=NAME)
            results.append((int(item.get("httpStatusCode", 500)), item.get("body")))
        return results

    def query_many(self, soqls: Sequence[str]) -> list[list[dict[str, Any]]]:
        """All records of each query, in order: one Composite call per 5 queries (pages after
        the first of a query cost one call each). The first failure raises."""
        rows: list[list[dict[str, Any]]] = []
        for outcome in self.query_many_outcomes(soqls):
            if isinstance(outcome, ConnectorError):
                raise outcome
            rows.append(outcome)
        return rows

    def query_many_outcomes(
        self, soqls: Sequence[str]
    ) -> list[list[dict[str, Any]] | ConnectorError]:
        """Like :meth:`query_many`, but each query's failure is its result instead of raised
        (a failed Composite call fails the queries it carried)."""
        outcomes: list[list[dict[str, Any]] | ConnectorError] = []
        for start in range(0, len(soqls), MAX_QUERY_OR_COLLECTION):
            group = soqls[start : start + MAX_QUERY_OR_COLLECTION]
            subs = [("GET", f"query/?q={quote(soql, safe='')}", None) for soql in group]
            try:
                answers = self.composite(subs)
            except ConnectorError as err:
                outcomes.extend(err for _ in group)
                continue
            for status, body in answers:
                try:
                    outcomes.append(self._query_rows(status, body))
                except ConnectorError as err:
                    outcomes.append(err)
        return outcomes

    def _query_rows(self, status: int, page: Any) -> list[dict[str, Any]]:
        """The records of a query subrequest's answer, following ``nextRecordsUrl``."""
        if status >= 400:
            raise subrequest_error(status, page, "query")
        if not isinstance(page, Mapping) or not isinstance(page.get("records"), list):
            raise PermanentError(f"unexpected query answer: {page!r:.200}", psp=NAME)
        rows: list[dict[str, Any]] = []
        while True:
            rows.extend({k: v for k, v in r.items() if k != "attributes"} for r in page["records"])
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return rows
            page = self._call("query_more", page["nextRecordsUrl"], identifier_is_url=True)

    def update_records_many(
        self, object_name: str, chunks: Sequence[Sequence[Mapping[str, Any]]]
    ) -> list[list[RecordResult]]:
        """Update chunks of at most :data:`MAX_COLLECTION` records by ``Id``: one Composite
        call per 5 chunks, each a ``PATCH composite/sobjects`` (allOrNone false).

        Results per chunk in input order. Never raises for Salesforce: a failed subrequest, or
        a failed Composite call, fails each record of the chunks it carried with the error that
        :meth:`update_records` would have raised, so earlier calls' results are kept.
        """
        return self.save_many([(object_name, None, chunk) for chunk in chunks])

    def save_many(
        self, chunks: Sequence[tuple[str, str | None, Sequence[Mapping[str, Any]]]]
    ) -> list[list[RecordResult]]:
        """Like :meth:`update_records_many`, but each chunk names its object and how its
        records are named: ``(object, None, records)`` updates by ``Id``; ``(object, field,
        records)`` upserts by the external id ``field`` (``PATCH
        composite/sobjects/{object}/{field}``; a result's ``created`` says it inserted). All
        kinds and objects share Composite calls, 5 chunks a call."""
        if any(len(chunk) > MAX_COLLECTION for _, _, chunk in chunks):
            raise ValueError(f"a collection takes at most {MAX_COLLECTION} records")
        results: list[list[RecordResult]] = []
        for start in range(0, len(chunks), MAX_QUERY_OR_COLLECTION):
            group = [c for c in chunks[start : start + MAX_QUERY_OR_COLLECTION] if c[2]]
            subs = [
                ("PATCH", _collection_path(obj, field), _collection_body(obj, c))
                for obj, field, c in group
            ]
            answers: list[tuple[int, Any] | ConnectorError]
            try:
                answers = list(self.composite(subs)) if subs else []
            except ConnectorError as err:
                answers = [err for _ in group]
            by_chunk = iter(zip(group, answers, strict=True))
            for _, _, chunk in chunks[start : start + MAX_QUERY_OR_COLLECTION]:
                if not chunk:
                    results.append([])
                    continue
                _, answer = next(by_chunk)
                results.append(_chunk_results(chunk, answer))
        return results

    def user_id(self, username: str) -> str | None:
        """The User id of ``username`` (one query), or None when no such user exists."""
        rows = self.query(f"SELECT Id FROM User WHERE Username = {soql_quote(username)} LIMIT 1")
        return str(rows[0]["Id"]) if rows else None


def _collection_body(object_name: str, chunk: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "allOrNone": False,
        "records": [{"attributes": {"type": object_name}, **r} for r in chunk],
    }


def _collection_path(object_name: str, external_id: str | None) -> str:
    return "composite/sobjects" + (f"/{object_name}/{external_id}" if external_id else "")


def _is_query_or_collection(path: str) -> bool:
    return path.lstrip("/").startswith(("query", "queryAll", "composite/sobjects"))


def _chunk_results(
    chunk: Sequence[Mapping[str, Any]], answer: tuple[int, Any] | ConnectorError
) -> list[RecordResult]:
    """Per-record results of one collection subrequest (its error for every record)."""
    error: ConnectorError
    if isinstance(answer, ConnectorError):
        error = answer
    else:
        status, body = answer
        if status < 400 and isinstance(body, list) and len(body) == len(chunk):
            return [_record_result(item) for item in body]
        if status < 400:
            error = PermanentError(f"unexpected composite/sobjects answer: {body!r:.200}", psp=NAME)
        else:
            error = subrequest_error(status, body, "composite/sobjects")
    return [RecordResult(r.get("Id"), error) for r in chunk]


def _record_result(item: Mapping[str, Any]) -> RecordResult:
    record_id = item.get("id")
    if item.get("success"):
        return RecordResult(record_id, created=bool(item.get("created")))
    errors = item.get("errors") or [{}]
    first = errors[0]
    code = str(first.get("statusCode") or "UNKNOWN")
    message = str(first.get("message") or "record not saved")
    if first.get("fields"):
        message += f" (fields: {', '.join(map(str, first['fields']))})"
    cls = TransientError if code in RETRYABLE_CODES else PermanentError
    return RecordResult(record_id, cls(message, psp=NAME, code=code, request_id=error_id(message)))


def id18(record_id: str) -> str:
    """The case-safe 18-character form of a 15-character record id (18 stays as is).

    Filters and results use the 18-character form, so ids given either way compare equal.
    """
    if len(record_id) != 15:
        return record_id
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(record_id[start : start + 5]) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return record_id + suffix


def soql_quote(value: str) -> str:
    """A SOQL string literal: backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
