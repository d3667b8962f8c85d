"""Bank details: request validation, the stage's answers, and the SDK client's error mapping.

None of these may ever quote an account number or IBAN back: each test that feeds one in
checks it does not come out.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.errors import AuthenticationError, NotFoundError, PermanentError, TransientError
from streams.bank_details import FieldError, parse_request
from streams.bank_details_client import (
    BankDetailsClient,
    BankDetailsRejected,
    BankDetailsUnavailable,
)

IBAN = "GB29NWBK60161331926819"
NUMBER = "31926819"


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _field_error(body: bytes) -> FieldError:
    with pytest.raises(FieldError) as info:
        parse_request(body)
    return info.value


def test_parses_an_iban_request() -> None:
    req = parse_request(
        _body(account_holder_name=" Ada ", iban="gb29 nwbk 6016 1331 9268 19", reference="f-1")
    )
    assert req.iban == IBAN and req.account_holder_name == "Ada" and req.psp == "gocardless"
    assert req.connector_kwargs()["idempotency_key"] == "paybus-bank-details:f-1"
    assert IBAN not in repr(req) and NUMBER not in repr(req)


def test_parses_sort_code_and_account_number_with_separators() -> None:
    req = parse_request(
        _body(
            account_holder_name="Ada",
            sort_code="60-16-13",
            account_number="3192 6819",
            customer={"email": "ada@example.com", "given_name": "Ada"},
        )
    )
    assert (req.sort_code, req.account_number) == ("601613", NUMBER)
    assert req.customer == {"email": "ada@example.com", "given_name": "Ada"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"iban": IBAN}, "account_holder_name"),
        ({"account_holder_name": "Ada"}, "iban"),
        ({"account_holder_name": "Ada", "iban": "GB00NWBK60161331926819"}, "iban"),
        ({"account_holder_name": "Ada", "iban": "GB29NWBK6016133192681"}, "iban"),
        ({"account_holder_name": "Ada", "iban": "QQ29NWBK60161331926819"}, "iban"),
        ({"account_holder_name": "Ada", "iban": IBAN, "sort_code": "601613"}, "iban"),
        ({"account_holder_name": "Ada", "account_number": NUMBER}, "sort_code"),
        ({"account_holder_name": "Ada", "sort_code": "601613"}, "account_number"),
        ({"account_holder_name": "Ada", "sort_code": "6016", "account_number": NUMBER},
         "sort_code"),
        ({"account_holder_name": "Ada", "sort_code": "601613", "account_number": "3192681"},
         "account_number"),
        ({"account_holder_name": 7, "iban": IBAN}, "account_holder_name"),
        ({"account_holder_name": "Ada", "iban": IBAN, "acount_number": NUMBER}, "acount_number"),
        ({"account_holder_name": "Ada", "iban": IBAN, "customer": {"ssn": "x"}}, "customer.ssn"),
        ({"account_holder_name": "Ada", "iban": IBAN, "customer": "x"}, "customer"),
        ({"account_holder_name": "Ada", "iban": IBAN, "customer_id": "CU1",
          "customer": {"email": "a@b.c"}}, "customer"),
        ({"account_holder_name": "Ada", "iban": IBAN, "reference": "no spaces!"}, "reference"),
        ({"account_holder_name": "Ada", "iban": IBAN, "psp": "Not A PSP"}, "psp"),
    ],
)  # fmt: skip
def test_names_the_bad_field_and_never_its_value(fields: dict[str, Any], field: str) -> None:
    error = _field_error(json.dumps(fields).encode())
    assert error.field == field and error.message.startswith(field)
    assert NUMBER not in error.message and "NWBK" not in error.message


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    assert _field_error(raw).field == "body"


# --- the stage's answers -------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    token: str
    masked: str


class _Registrar:
    """A connector that registers bank details (or fails as told)."""

    name = "fake"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def register_bank_account(self, **details: Any) -> _Token:
        self.calls.append(details)
        if self.error is not None:
            raise self.error
        return _Token("BA123", "****" + str(details["iban"] or details["account_number"])[-4:])


@pytest.fixture
def stage(clean_env: Any) -> Any:
    from streams.agents.bank_details import BankDetailsStage
    from streams.app import build_app
    from streams.settings import Settings

    return BankDetailsStage(build_app(Settings(data_dir=clean_env / "data")))


def _register(stage: Any, connector: Any, **fields: Any) -> tuple[int, dict[str, Any]]:
    stage.connectors._cache["fake"] = connector
    request = parse_request(_body(psp="fake", account_holder_name="Ada", **fields))
    result: tuple[int, dict[str, Any]] = asyncio.run(stage.register(request))
    return result


def test_stage_answers_only_token_and_mask(stage: Any) -> None:
    fake = _Registrar()
    status, answer = _register(stage, fake, iban=IBAN, reference="f-9")
    assert (status, answer) == (201, {"token": "BA123", "masked": "****6819"})
    assert fake.calls[0]["iban"] == IBAN
    assert fake.calls[0]["idempotency_key"] == "paybus-bank-details:f-9"


@pytest.mark.parametrize(
    ("error", "status", "field"),
    [
        (PermanentError("iban is invalid", code="invalid_bank_details"), 400, "iban"),
        (PermanentError("Validation failed", http_status=422), 400, "bank_details"),
        (NotFoundError("not found", http_status=404), 400, "customer_id"),
        (TransientError("gocardless unreachable"), 503, None),
        (AuthenticationError("bad token", http_status=401), 502, None),
        (RuntimeError(f"boom {NUMBER}"), 500, None),
    ],
)
def test_stage_maps_connector_failures(
    stage: Any, error: Exception, status: int, field: str | None
) -> None:
    got, answer = _register(stage, _Registrar(error), iban=IBAN, customer_id="CU1")
    assert got == status and answer.get("field") == field
    assert NUMBER not in json.dumps(answer)


def test_stage_refuses_a_connector_without_bank_details(stage: Any) -> None:
    class NoBankDetails:
        name = "fake"

    status, answer = _register(stage, NoBankDetails(), iban=IBAN)
    assert status == 400 and answer["field"] == "psp"


def test_bearer_token_is_checked(stage: Any) -> None:
    assert stage._authorised({"Authorization": "Bearer paybus_api_token"})
    assert stage._authorised({"Authorization": "bearer paybus_api_token"})
    assert not stage._authorised({"Authorization": "Bearer paybus_api_tokeN"})
    assert not stage._authorised({"Authorization": "Basic paybus_api_token"})
    assert not stage._authorised({})


# --- the SDK client ------------------------------------------------------------------------


@dataclass
class _Canned:
    status: int
    body: bytes
    seen: list[tuple[dict[str, str], bytes]]


@pytest.fixture
def server() -> Iterator[tuple[str, _Canned]]:
    canned = _Canned(201, b'{"token": "BA1", "masked": "****6819"}', [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            canned.seen.append((dict(self.headers), body))
            self.send_response(canned.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", canned
    httpd.shutdown()
    httpd.server_close()


def test_client_sends_bearer_and_unpacks_token(server: tuple[str, _Canned]) -> None:
    url, canned = server
    token, masked = BankDetailsClient(url, "s3cret").register(
        account_holder_name="Ada", iban=IBAN, reference="f-1"
    )
    assert (token, masked) == ("BA1", "****6819")
    headers, body = canned.seen[0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert json.loads(body) == {"account_holder_name": "Ada", "iban": IBAN, "reference": "f-1"}


def test_client_maps_errors(server: tuple[str, _Canned]) -> None:
    url, canned = server
    client = BankDetailsClient(url, "s3cret")
    canned.status, canned.body = 400, b'{"error": "iban has wrong check digits", "field": "iban"}'
    with pytest.raises(BankDetailsRejected) as rejected:
        client.register(account_holder_name="Ada", iban=IBAN)
    assert rejected.value.field == "iban" and rejected.value.status == 400
    assert NUMBER not in str(rejected.value)
    canned.status, canned.body = 503, b'{"error": "gocardless is unavailable"}'
    with pytest.raises(BankDetailsUnavailable):
        client.register(account_holder_name="Ada", iban=IBAN)
    canned.status, canned.body = 401, b"{}"
    with pytest.raises(BankDetailsRejected) as unauthorised:
        client.register(account_holder_name="Ada", iban=IBAN)
    assert unauthorised.value.status == 401


def test_client_reports_an_unreachable_paybus() -> None:
    from streams.broker import free_port

    client = BankDetailsClient(f"http://127.0.0.1:{free_port()}", "s3cret", timeout_s=2)
    with pytest.raises(BankDetailsUnavailable):
        client.register(account_holder_name="Ada", iban=IBAN)


@pytest.mark.parametrize("token", ["paybus_api_tokén", "\udcff\udcfe"])
def test_a_non_ascii_bearer_token_is_refused_not_a_crash(stage: Any, token: str) -> None:
    # aiohttp decodes header bytes with surrogateescape: str.encode() would raise (a 500).
    assert not stage._authorised({"Authorization": f"Bearer {token}"})
