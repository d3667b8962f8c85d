"""A small client for a Confluent-compatible schema registry's REST API.

Only the two calls the codec needs: register a schema under a subject (idempotent: the registry
answers the existing id for a schema it already has) and fetch a schema by id. Results are
cached, so the network is touched once per schema per process.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from streams.errors import PaybusError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(PaybusError):
    """The schema registry refused or could not be reached."""


class SchemaRegistryClient:
    """Register and look up Avro schemas by id."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Mapping[str, Any]] = {}

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RegistryError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(
                f"{method} {path}: registry unreachable at {self.url}: {exc}"
            ) from exc

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        text = json.dumps(schema, sort_keys=True)
        key = (subject, text)
        if key not in self._ids:
            answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": text})
            schema_id = int(answer["id"])
            self._ids[key] = schema_id
            self._schemas[schema_id] = schema
        return self._ids[key]

    def schema_for(self, schema_id: int) -> Mapping[str, Any]:
        if schema_id not in self._schemas:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
            self._schemas[schema_id] = json.loads(answer["schema"])
        return self._schemas[schema_id]
