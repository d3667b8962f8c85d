"""Run the sandbox: in a background thread for tests, or in the foreground for the demo.

``start_sandbox`` binds the socket before the thread starts, so ``base_url`` is known and the
port is taken the moment the call returns; it waits until the server answers, so a test can
use it at once without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import build_app
from .clock import DAY_MS
from .state import SandboxSettings
from .store import Json, Store
from .webhooks import SETTINGS_KEY, WebhookConfig, load_config


def open_store(db_path: str | None, webhook_config: Json | None) -> Store:
    """Open (or create) the database and apply webhook settings given at start-up."""
    store = Store(db_path or ":memory:")
    if webhook_config:
        merged = {**load_config(store).to_json(), **webhook_config}
        store.set_setting(SETTINGS_KEY, WebhookConfig.from_json(merged).to_json())
    return store


class SandboxAdminError(Exception):
    """An admin call answered with an error; ``body`` is the GoCardless-shaped error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"sandbox admin call failed with HTTP {status}: {body}")
        self.status = status
        self.body = body


class RunningSandbox:
    """A sandbox serving on 127.0.0.1 from its own thread and event loop.

    Use as a context manager or call ``stop()``. The admin helpers below are thin HTTP calls
    to ``/_sandbox/...``, so they exercise the same routes a demo operator would use.
    """

    def __init__(self, sock: socket.socket, store: Store, settings: SandboxSettings) -> None:
        host, port = sock.getsockname()[:2]
        self.host, self.port = str(host), int(port)
        self.base_url = f"http://{self.host}:{self.port}"
        self.token = settings.token
        self.admin_token = settings.admin_token
        self._store = store
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(build_app(store, settings), access_log=None)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"gocardless-sandbox:{self.port}", daemon=True
        )
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("GoCardless sandbox failed to start") from self._error

    def _run(self, sock: socket.socket) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, sock)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        """Stop serving and close the database (a file keeps its data for a restart)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._store.close()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin helpers ----------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Json | None = None) -> Any:
        """Call an admin route and return its decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.admin_token:
            request.add_header("X-Sandbox-Admin-Token", self.admin_token)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SandboxAdminError(exc.code, json.loads(exc.read() or b"{}")) from None

    def advance(self, steps: int = 1, **when: Any) -> list[Json]:
        """One step (or ``steps``) for every non-final object, or ``to=``/``days=``/``hours=``;
        returns the events that happened."""
        body: Json = dict(when) if when else {"steps": steps}
        events: list[Json] = self.admin("POST", "/_sandbox/advance", body)["events"]
        return events

    def set_outcome(self, resource_id: str, outcome: str) -> Json:
        result: Json = self.admin("POST", f"/_sandbox/outcomes/{resource_id}", {"outcome": outcome})
        return result

    def configure_webhooks(self, **settings: Any) -> Json:
        result: Json = self.admin("POST", "/_sandbox/webhooks", settings)
        return result

    def deliver_webhooks(self) -> Json:
        result: Json = self.admin("POST", "/_sandbox/deliver_webhooks", {})
        return result

    def inject_faults(
        self, path_prefix: str, count: int = 1, status: int = 503, method: str | None = None
    ) -> Json:
        """Answer the next ``count`` API requests under ``path_prefix`` with ``status``."""
        body: Json = {"path_prefix": path_prefix, "count": count, "status": status}
        if method is not None:
            body["method"] = method
        result: Json = self.admin("POST", "/_sandbox/faults", body)
        return result

    def faults(self) -> Json:
        """The faults still armed, and how many requests were answered by one."""
        result: Json = self.admin("GET", "/_sandbox/faults")
        return result

    def clear_faults(self) -> Json:
        """Disarm every fault."""
        result: Json = self.admin("DELETE", "/_sandbox/faults")
        return result


def start_sandbox(
    port: int = 0,
    db_path: str | None = None,
    token: str = "sandbox_token",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    *,
    host: str = "127.0.0.1",
    admin_token: str | None = None,
    step_days: float = 1.0,
    webhook_options: Json | None = None,
    auto_advance_seconds: float | None = None,
    auto_deliver_seconds: float | None = None,
) -> RunningSandbox:
    """Start a sandbox in a background thread; returns once it accepts connections.

    ``db_path=None`` keeps everything in memory. ``webhook_options`` takes the other
    ``WebhookConfig`` fields (batch_size, shuffle, duplicate_rate, drop_rate, seed).
    """
    config: Json = dict(webhook_options or {})
    if webhook_url is not None:
        config["url"] = webhook_url
    if webhook_secret is not None:
        config["secret"] = webhook_secret
    store = open_store(db_path, config)
    settings = SandboxSettings(
        token=token,
        admin_token=admin_token,
        step_ms=int(step_days * DAY_MS),
        auto_advance_seconds=auto_advance_seconds,
        auto_deliver_seconds=auto_deliver_seconds,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        store.close()
        raise
    return RunningSandbox(sock, store, settings)
