"""Running the sandbox: a background thread with its own event loop, plus client helpers.

Tests and the demo want a real HTTPS server they can point the real simple-salesforce client
at, without owning an event loop themselves; so the server lives in a daemon thread and the
handle exposes what a caller needs (instance URL, certificate, tokens, a ready-made client, and
an admin client for the ``/_sandbox`` hooks).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests
from aiohttp import web
from simple_salesforce.api import Salesforce

from .app import State, build_app
from .faults import Faults, Usage
from .org import Org
from .schema import ObjectSpec, default_objects, user_id
from .store import Store
from .tls import generate_cert, server_context

if TYPE_CHECKING:
    from connectors.salesforce.settings import ObjectMapping

#: Session token -> user name. The "integration" user is the bus itself; "staff" a human.
DEFAULT_TOKENS: dict[str, str] = {
    "sandbox-staff-token": "staff",
    "sandbox-integration-token": "integration",
}
DEFAULT_VERSION = "59.0"


def make_salesforce(
    instance_url: str, session_id: str, cert_path: str | Path, version: str = DEFAULT_VERSION
) -> Salesforce:
    """A simple-salesforce client that trusts the sandbox's self-signed certificate.

    simple-salesforce keeps the port of ``instance_url`` (unless it is 443) and always speaks
    https, so all it needs is a session whose ``verify`` points at the sandbox certificate.
    """
    return Salesforce(
        instance_url=instance_url,
        session_id=session_id,
        session=sandbox_session(cert_path),
        version=version,
    )


def sandbox_session(cert_path: str | Path) -> requests.Session:
    """A requests session that trusts exactly the sandbox certificate.

    ``trust_env`` is off because requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override
    a session's ``verify`` (and would route loopback through an ``HTTPS_PROXY``).
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = str(cert_path)
    return session


class SandboxAdmin:
    """HTTP client for the ``/_sandbox`` admin endpoints (works against a CLI-started sandbox)."""

    def __init__(self, instance_url: str, cert_path: str | Path) -> None:
        self.base = instance_url.rstrip("/") + "/_sandbox"
        self.session = sandbox_session(cert_path)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        """Users, usage, faults, page size and record counts."""
        return dict(self._call("GET", "/state"))

    def usage(self) -> dict[str, int]:
        """``{used, limit, remaining}`` of the API allowance."""
        return dict(self._call("GET", "/usage"))

    def reset_usage(self) -> None:
        """Set the API call counter back to 0."""
        self._call("DELETE", "/usage")

    def set_usage(self, used: int | None = None, limit: int | None = None) -> None:
        """Set the counter and/or the daily limit (to test limit handling)."""
        body = {k: v for k, v in (("used", used), ("limit", limit)) if v is not None}
        self._call("PUT", "/usage", body)

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        error_code: str = "SERVER_UNAVAILABLE",
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` API calls (matching ``path``/``method``) with ``status``."""
        self._call(
            "POST",
            "/faults/unavailable",
            {
                "count": count,
                "status": status,
                "errorCode": error_code,
                "path": path,
                "method": method,
            },
        )

    def set_latency(self, ms: int) -> None:
        """Delay every API call by ``ms`` milliseconds."""
        self._call("POST", "/faults/latency", {"ms": ms})

    def add_rule(
        self,
        obj: str | None = None,
        field: str | None = None,
        equals: Any = None,
        record_id: str | None = None,
        error_code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        message: str = "Record rejected by sandbox validation rule",
        times: int | None = None,
    ) -> None:
        """Fail writes of records with ``field == equals`` (or the record ``record_id``)."""
        self._call(
            "POST",
            "/faults/rules",
            {
                "object": obj,
                "field": field,
                "equals": equals,
                "id": record_id,
                "errorCode": error_code,
                "message": message,
                "times": times,
            },
        )

    def deploy_guard_rule(
        self,
        obj: str,
        field: str,
        message: str,
        name: str = "Paybus_Bus_Seq_Guard",
        active: bool = True,
        kind: str = "grow_only",
    ) -> None:
        """Deploy a paybus validation rule on ``obj``, as an admin deploys
        ``deploy/salesforce``; it is org setup, not a fault. ``kind`` ``grow_only`` (the
        version guard: ``field`` may only grow) or ``no_create`` (no new record carries it)."""
        body = {
            "object": obj, "field": field, "message": message, "name": name, "active": active,
            "kind": kind,
        }  # fmt: skip
        self._call("POST", "/validation-rules", body)

    def deploy_paybus_rules(self, mapping: ObjectMapping, no_create: bool = True) -> None:
        """Deploy what ``deploy/salesforce`` holds for one object: the version-guard rule and,
        with ``no_create``, the no-create rule, by their default names."""
        from connectors.salesforce import guard_rule as g

        self.deploy_guard_rule(mapping.object_name, mapping.bus_seq, g.message(mapping))
        if no_create:
            self.deploy_guard_rule(
                mapping.object_name, mapping.bus_seq, g.no_create_message(mapping),
                g.NO_CREATE_RULE_NAME, kind="no_create",
            )  # fmt: skip

    def clear_faults(self) -> None:
        """Remove outages, validation rules and latency."""
        self._call("DELETE", "/faults")

    def records(self, obj: str) -> list[dict[str, Any]]:
        """Raw records of ``obj`` in SystemModstamp order (all fields)."""
        return list(self._call("GET", f"/records/{obj}")["records"])

    def record(self, obj: str, record_id: str) -> dict[str, Any]:
        """One raw record."""
        return dict(self._call("GET", f"/records/{obj}/{record_id}"))

    def seed(
        self, obj: str, records: Iterable[Mapping[str, Any]], as_user: str | None = None
    ) -> list[str]:
        """Write records bypassing validation rules and API accounting; returns their ids."""
        body = {"records": list(records), "as_user": as_user}
        return list(self._call("POST", f"/records/{obj}", body)["ids"])

    def writes(self, since: int = 0) -> list[tuple[float, str, str]]:
        """Every record save (wall-clock seconds, object, id), oldest first, from ``since``."""
        return [
            (float(t), str(o), str(i))
            for t, o, i in self._call("GET", f"/writes?since={since}")["writes"]
        ]

    def wipe(self, obj: str | None = None) -> int:
        """Delete all records (of one object); returns how many."""
        return int(self._call("DELETE", f"/records/{obj}" if obj else "/records")["deleted"])


class Sandbox:
    """A Salesforce REST sandbox served over HTTPS from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | Path = ":memory:",
        tokens: Mapping[str, str] | None = None,
        objects: Iterable[ObjectSpec] | None = None,
        page_size: int = 2000,
        api_limit: int = 15000,
        cert_dir: str | Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db_path = str(db_path)
        self.tokens = dict(tokens if tokens is not None else DEFAULT_TOKENS)
        self.objects = list(objects if objects is not None else default_objects())
        self.page_size = page_size
        self.api_limit = api_limit
        self._own_cert_dir = cert_dir is None
        self.cert_dir = Path(cert_dir or tempfile.mkdtemp(prefix="paybus-sf-sandbox-"))
        self.cert_path, self._key_path = generate_cert(self.cert_dir, (host,))
        self.state: State | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def instance_url(self) -> str:
        """``https://127.0.0.1:PORT`` (loopback even when bound to a wildcard address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self.port}"

    def start(self) -> Sandbox:
        """Start serving; returns once the port is bound (raises if start-up failed)."""
        self._thread = threading.Thread(target=self._run, name="sf-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self.stop()
            raise RuntimeError("Salesforce sandbox failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(self._startup())
        except BaseException as err:  # reported to start()'s caller
            self._error = err
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            if self.state is not None:
                self.state.org.store.close()
            loop.close()

    async def _startup(self) -> web.AppRunner:
        faults = Faults()
        store = Store(self.db_path, self.objects)
        org = Org(store, self.objects, self.tokens, faults, page_size=self.page_size)
        self.state = State(org=org, faults=faults, usage=Usage(limit=self.api_limit))
        runner = web.AppRunner(build_app(self.state), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, ssl_context=server_context(self.cert_path, self._key_path)
        )
        await site.start()
        self.port = int(runner.addresses[0][1])
        return runner

    def stop(self) -> None:
        """Stop serving and close the database (the file keeps the data)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = None
        if self._own_cert_dir:
            shutil.rmtree(self.cert_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def token_for(self, user: str) -> str:
        """The session token of user name ``user``."""
        for token, name in self.tokens.items():
            if name == user:
                return token
        raise KeyError(f"no session token for user {user!r}; known: {sorted(self.tokens.values())}")

    def user_id(self, user: str) -> str:
        """The Salesforce User id of user name ``user`` (CreatedById / LastModifiedById)."""
        return user_id(user)

    def client(self, user: str = "integration", version: str = DEFAULT_VERSION) -> Salesforce:
        """A simple-salesforce client logged in as ``user``."""
        return make_salesforce(self.instance_url, self.token_for(user), self.cert_path, version)

    @property
    def admin(self) -> SandboxAdmin:
        """Client for the ``/_sandbox`` admin endpoints."""
        return SandboxAdmin(self.instance_url, self.cert_path)


@contextmanager
def start_sandbox(
    port: int = 0,
    db_path: str | Path = ":memory:",
    tokens: Mapping[str, str] | None = None,
    **options: Any,
) -> Iterator[Sandbox]:
    """Run a sandbox for the duration of a ``with`` block (see :class:`Sandbox` for options)."""
    sandbox = Sandbox(port=port, db_path=db_path, tokens=tokens, **options)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
