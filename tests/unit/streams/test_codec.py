"""The Avro codec: both wire formats, every schema, clear errors on bad bytes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.codec import SINGLE_OBJECT_MAGIC, AvroCodec, SchemaRepository, fingerprint
from streams.errors import DecodeError, ValidationError
from streams.registry_client import SchemaRegistryClient

NOW = datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)

SAMPLES: dict[str, dict[str, Any]] = {
    "CrmChange": {
        "change_id": "chg-1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "intent": "create_payment",
        "occurred_at": NOW,
        "source": "salesforce",
        "amount_minor": 1250,
        "currency": "EUR",
        "method": "card",
        "metadata": {"a": "b"},
    },
    "PspWebhook": {
        "webhook_id": "evt_1",
        "psp": "stripe",
        "psp_object_id": "pi_1",
        "received_at": NOW,
        "body": b'{"id": "evt_1"}',
        "headers": {"stripe-signature": "t=1,v1=x"},
    },
    "PaymentCommand": {
        "command_id": "cmd-1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "operation": "create_payment",
        "psp": "stripe",
        "issued_at": NOW,
        "amount_minor": 5,
    },
    "PaymentEvent": {
        "event_id": "evt_1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "status": "confirmed",
        "occurred_at": NOW,
        "source": "stripe",
        "method": "card",
    },
    "StatusUpdate": {
        "event_id": "evt_1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "from_status": "created",
        "to_status": "confirmed",
        "occurred_at": NOW,
        "seq": 2,
        "inferred": False,
        "source": "stripe",
    },
    "RetryEnvelope": {
        "retry_id": "r-1",
        "aggregate_id": "pay-1",
        "original_topic": "t",
        "original_partition": 3,
        "original_offset": 7,
        "key": b"pay-1",
        "value": b"\x00\x01",
        "attempt": 1,
        "due_at": NOW,
        "first_failed_at": NOW,
        "error": "503",
        "stage": "connector:stripe",
    },
    "DeadLetter": {
        "dead_letter_id": "t:3:7",
        "original_topic": "t",
        "original_partition": 3,
        "original_offset": 7,
        "key": None,
        "value": b"\xff",
        "stage": "decode",
        "reason": "bad magic",
        "error_log": ["bad magic"],
        "attempts": 1,
        "failed_at": NOW,
    },
}


class _Registry(BaseHTTPRequestHandler):
    """The two endpoints of a Confluent schema registry that the codec uses."""

    schemas: dict[int, str] = {}
    subjects: dict[str, int] = {}
    calls: list[str] = []

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        length = int(self.headers["Content-Length"])
        schema = json.loads(self.rfile.read(length))["schema"]
        for schema_id, text in self.schemas.items():
            if text == schema:
                self._reply(200, {"id": schema_id})
                return
        schema_id = len(self.schemas) + 100
        self.schemas[schema_id] = schema
        self._reply(200, {"id": schema_id})

    def do_GET(self) -> None:
        self.calls.append(f"GET {self.path}")
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id not in self.schemas:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._reply(200, {"schema": self.schemas[schema_id]})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry_url() -> Iterator[str]:
    _Registry.schemas, _Registry.subjects, _Registry.calls = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(SchemaRepository().current)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_round_trip(name: str) -> None:
    codec = AvroCodec()
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == SINGLE_OBJECT_MAGIC
    # the current schema, or the release while the sample uses nothing added since
    assert data[2:10] == codec.repository.writer_for(name, SAMPLES[name])[0].fingerprint
    decoded = codec.decode(data, name)
    for key, value in SAMPLES[name].items():
        assert decoded[key] == value, key


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_confluent_round_trip_through_registry(name: str, registry_url: str) -> None:
    writer = AvroCodec(registry=SchemaRegistryClient(registry_url))
    data = writer.encode(name, SAMPLES[name])
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id in _Registry.schemas
    # A fresh codec knows nothing: it must look the id up in the registry.
    reader = AvroCodec(registry=SchemaRegistryClient(registry_url))
    decoded = reader.decode(data, name)
    assert {k: decoded[k] for k in SAMPLES[name]} == SAMPLES[name]
    assert f"GET /schemas/ids/{schema_id}" in _Registry.calls


def test_registry_ids_are_cached(registry_url: str) -> None:
    codec = AvroCodec(registry=SchemaRegistryClient(registry_url))
    for _ in range(3):
        codec.encode("PaymentEvent", SAMPLES["PaymentEvent"])
    assert sum(c.startswith("POST") for c in _Registry.calls) == 1


def _crc64_avro(data: bytes) -> bytes:
    """The Avro spec's reference CRC-64-AVRO, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_fingerprint_is_crc64_avro_of_canonical_form() -> None:
    schema = {
        "type": "record",
        "name": "X",
        "doc": "ignored",
        "fields": [{"name": "a", "type": "int"}],
    }
    canonical = b'{"name":"X","type":"record","fields":[{"name":"a","type":"int"}]}'
    assert fingerprint(schema) == _crc64_avro(canonical)
    assert _crc64_avro(b'"int"').hex() == "8f5c393f1ad57572"  # the spec's example


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "unknown magic"),
        (b"\x7b\x22", "unknown magic"),
        (SINGLE_OBJECT_MAGIC + b"\x01\x02", "truncated single-object header"),
        (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"\x02", "unknown schema fingerprint"),
        (b"\x00\x00\x00", "truncated Confluent header"),
        (b"\x00\x00\x00\x00\x07\x02", "no registry"),
    ],
)
def test_corrupt_bytes_give_a_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        AvroCodec().decode(data)


def test_truncated_body_is_a_decode_error() -> None:
    codec = AvroCodec()
    data = codec.encode("PaymentEvent", SAMPLES["PaymentEvent"])
    with pytest.raises(DecodeError, match="corrupt Avro body"):
        codec.decode(data[:14])


def test_decode_error_can_be_located() -> None:
    err = DecodeError("bad").at("paybus.payments.events", 3, 42)
    assert "paybus.payments.events[3]@42" in str(err)
    assert (err.topic, err.partition, err.offset) == ("paybus.payments.events", 3, 42)


def test_encoding_a_bad_record_names_the_field() -> None:
    with pytest.raises(ValidationError, match="amount_minor"):
        AvroCodec().validate("CrmChange", {**SAMPLES["CrmChange"], "amount_minor": "ten"})
    with pytest.raises(ValidationError):
        AvroCodec().encode("CrmChange", {**SAMPLES["CrmChange"], "bogus": 1})
