"""``POST /composite``: up to 25 REST subrequests in one API call, as Salesforce runs them.

Each subrequest goes through the same org logic as its standalone route (see :mod:`.app`) and
meets injected outages on its own method and path; the outer call is counted once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from . import composite
from .app import State, _batch_size_of, _body, _json, _state, _user
from .schema import ApiError

#: Subrequests per ``/composite`` call, and how many of them may be queries or collections.
MAX_SUBREQUESTS = 25
MAX_QUERY_OR_COLLECTION = 5
_SUB_URL = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)(?P<rest>/[^?]*)?$")
_HALTED = ApiError(
    400,
    "PROCESSING_HALTED",
    "The transaction was rolled back since another operation in the same transaction failed.",
)


class _Rollback(Exception):
    """Raised inside an allOrNone composite to undo every subrequest."""


def _limit_error(message: str) -> web.Response:
    """The answer to a composite over its limits: 400, the error as a lone subrequest result."""
    error = {"body": ApiError(400, "LIMIT_EXCEEDED", message).body(), "httpHeaders": {}}
    return _json({"compositeResponse": [error | {"httpStatusCode": 400, "referenceId": None}]}, 400)


def _is_query_or_collection(url: str) -> bool:
    match = _SUB_URL.match(urlsplit(url).path)
    rest = (match["rest"] or "") if match else ""
    return rest.startswith(("/query", "/queryAll", "/composite/sobjects"))


def _subrequest(state: State, user: str, sub: Mapping[str, Any]) -> tuple[int, Any]:
    """Run one subrequest against the org: ``(status, body)``, errors as Salesforce sends them.

    Outages injected with ``fail_next`` are consulted with the subrequest's own method and path,
    so a fault aimed at ``composite/sobjects`` hits the collection calls made inside composites.
    """
    method = str(sub.get("method", "")).upper()
    url = urlsplit(str(sub.get("url", "")))
    match = _SUB_URL.match(url.path)
    if match is None:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
    outage = state.faults.take_unavailable(method, url.path)
    if outage is not None:
        raise outage
    org, version = state.org, match["version"]
    parts = [p for p in (match["rest"] or "").split("/") if p]
    params = {k: v[-1] for k, v in parse_qs(url.query).items()}
    headers = sub.get("httpHeaders") or {}
    body = sub.get("body")
    if parts[:1] in (["query"], ["queryAll"]) and method == "GET":
        if len(parts) == 2:
            return 200, org.query_more(parts[1], version, _batch_size_of(headers))
        if len(parts) == 1:
            if not params.get("q"):
                raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
            return 200, org.query(params["q"], version, _batch_size_of(headers))
    if parts == ["composite", "sobjects"]:
        if method in ("PATCH", "POST"):
            return 200, composite.save_collection(org, body, user, creating=method == "POST")
        if method == "DELETE":
            ids = [i for i in params.get("ids", "").split(",") if i]
            all_or_none = params.get("allOrNone", "false").lower() == "true"
            return 200, composite.delete_collection(org, ids, all_or_none)
    if len(parts) == 4 and parts[:2] == ["composite", "sobjects"] and method == "PATCH":
        return 200, composite.upsert_collection(org, parts[2], parts[3], body, user)
    if len(parts) == 3 and parts[0] == "sobjects" and parts[2] != "describe":
        obj, rid = parts[1], parts[2]
        if method == "GET":
            return 200, org.read(obj, rid, version, params.get("fields"))
        if method == "PATCH":
            if not isinstance(body, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
            org.update(obj, rid, body, user)
            return 204, None
        if method == "DELETE":
            org.delete(obj, rid)
            return 204, None
    if len(parts) == 2 and parts[0] == "sobjects" and method == "POST":
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        rid = org.create(parts[1], body, user)
        return 201, {"id": rid, "success": True, "errors": []}
    raise ApiError(400, "INVALID_FIELD", f"{method} {url.path} is not supported in a composite")


def _failed(sub: Mapping[str, Any], answer: tuple[int, Any]) -> bool:
    """Whether a subrequest failed: an error status, or an allOrNone collection that did."""
    status, body = answer
    if status >= 400:
        return True
    sub_body = sub.get("body")
    rolled_back = isinstance(sub_body, dict) and bool(sub_body.get("allOrNone"))
    return rolled_back and isinstance(body, list) and not all(r.get("success") for r in body)


async def composite_request(request: web.Request) -> web.Response:
    """``POST /composite``: up to 25 subrequests, in order, as **one** API call.

    The middleware counted the call and applied latency once; each subrequest then runs the
    same org logic as its standalone route (and meets injected outages on its own path). At
    most 5 subrequests may be queries or sObject Collections. With ``allOrNone`` a failed
    subrequest rolls all of them back and the others answer ``PROCESSING_HALTED``.
    """
    state = _state(request)
    body = await _body(request)
    subs = body.get("compositeRequest") if isinstance(body, dict) else None
    if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
        raise ApiError(400, "JSON_PARSER_ERROR", "Body must be {allOrNone, compositeRequest: [..]}")
    if not subs:
        raise ApiError(400, "INVALID_FIELD", "compositeRequest must contain subrequests")
    if len(subs) > MAX_SUBREQUESTS:
        return _limit_error(f"The request cannot contain more than {MAX_SUBREQUESTS} operations.")
    heavy = sum(1 for s in subs if _is_query_or_collection(str(s.get("url", ""))))
    if heavy > MAX_QUERY_OR_COLLECTION:
        return _limit_error(
            f"The request cannot contain more than {MAX_QUERY_OR_COLLECTION} query or "
            "sObject Collections operations."
        )
    refs = [s.get("referenceId") for s in subs]
    if not all(isinstance(r, str) and re.fullmatch(r"\w+", r) for r in refs):
        raise ApiError(400, "INVALID_FIELD", "Every subrequest needs a referenceId ([A-Za-z0-9_])")
    if len(set(refs)) != len(refs):
        raise ApiError(400, "INVALID_FIELD", "Duplicate referenceId in compositeRequest")
    all_or_none = bool(body.get("allOrNone", False))
    user = _user(request)
    answers: list[tuple[int, Any]] = []
    # Only allOrNone joins the subrequests in one transaction: a nested one cannot roll back
    # alone, so an allOrNone collection inside must keep its own.
    scope = state.org.store.transaction() if all_or_none else contextlib.nullcontext()
    try:
        with scope:
            for sub in subs:
                try:
                    answers.append(_subrequest(state, user, sub))
                except ApiError as err:
                    answers.append((err.status, err.body()))
            if all_or_none and any(_failed(s, a) for s, a in zip(subs, answers, strict=True)):
                raise _Rollback
    except _Rollback:
        answers = [a if a[0] >= 400 else (_HALTED.status, _HALTED.body()) for a in answers]
    return _json(
        {
            "compositeResponse": [
                {"body": answer, "httpHeaders": {}, "httpStatusCode": status, "referenceId": ref}
                for (status, answer), ref in zip(answers, refs, strict=True)
            ]
        }
    )
