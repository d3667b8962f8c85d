"""localstripe, in process, on loopback, for the tests and the `paybus dev` stack.

localstripe's CLI binds every interface and pickles its store to ``/tmp/localstripe.pickle`` on
every write, so two instances on one machine would trample each other. Here its aiohttp app is
served on ``127.0.0.1:<free port>`` from a background thread with its own event loop, the
pickling is switched off for this process, and a lock file keeps a second test process on this
machine from starting another instance at the same time (the store and webhook registry are
module globals: one instance per process, shared by a session fixture, flushed between tests).

The same loop also hosts the idempotency proxy and webhook receivers, so localstripe's
fire-and-forget webhook tasks run next to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

T = TypeVar("T")

LOCK_PATH = "/tmp/paybus-localstripe.lock"


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _cancel_pending() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:  # localstripe's fire-and-forget webhook senders
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel_pending())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 at a free port; return the runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class LocalStripe:
    """A running in-process localstripe."""

    base_url: str
    loop_thread: LoopThread
    _runner: web.AppRunner

    def reset(self) -> None:
        """Forget every object and webhook registration (between tests)."""
        from localstripe import webhooks
        from localstripe.resources import store

        async def _reset() -> None:
            store.clear()
            webhooks._webhooks.clear()

        self.loop_thread.run(_reset())

    def register_webhook(
        self, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """``POST /_config/webhooks/<id>`` (localstripe's own endpoint for this)."""
        form: list[tuple[str, str]] = [("url", url), ("secret", secret)]
        form += [("events[]", e) for e in events or []]

        async def _post() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{self.base_url}/_config/webhooks/{webhook_id}", data=form) as r,
            ):
                r.raise_for_status()

        self.loop_thread.run(_post())


@contextlib.contextmanager
def _machine_lock(timeout_s: float = 60.0) -> Iterator[None]:
    with open(LOCK_PATH, "w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another localstripe holds {LOCK_PATH}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def start_localstripe(loop_thread: LoopThread, *, exclusive: bool = True) -> Iterator[LocalStripe]:
    """Run localstripe on ``loop_thread`` for the duration of the block.

    ``exclusive`` takes the machine-wide lock (the test suite's habit). The dev stack runs
    without it: with pickling off, an instance shares nothing with another process's, and
    ``paybus dev --once`` must be able to run while a test session holds the lock.
    """
    from localstripe import resources, server

    with _machine_lock() if exclusive else contextlib.nullcontext():
        saved = (resources.Store.dump_to_disk, resources.Store.try_load_from_disk)
        resources.Store.dump_to_disk = lambda self: None
        resources.Store.try_load_from_disk = lambda self: None
        runner, base_url = loop_thread.run(serve(server.app))
        running = LocalStripe(base_url=base_url, loop_thread=loop_thread, _runner=runner)
        running.reset()
        try:
            yield running
        finally:
            loop_thread.run(runner.cleanup())
            resources.Store.dump_to_disk, resources.Store.try_load_from_disk = saved


@dataclass
class WebhookReceiver:
    """A tiny webhook endpoint that records raw bodies and headers, to wait on."""

    url: str = ""
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    status: int = 200
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._cond:
            self.received.append((body, dict(request.headers)))
            self._cond.notify_all()
        return web.Response(status=self.status)

    def start(self, loop_thread: LoopThread) -> WebhookReceiver:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/webhook", self._handle)
        self._runner, base = loop_thread.run(serve(app))
        self.url = f"{base}/webhook"
        return self

    def stop(self, loop_thread: LoopThread) -> None:
        if self._runner is not None:
            loop_thread.run(self._runner.cleanup())

    def wait_for(
        self, predicate: Callable[[bytes, dict[str, str]], bool], timeout: float = 10.0
    ) -> tuple[bytes, dict[str, str]]:
        """The first recorded request matching ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for body, headers in self.received:
                    if predicate(body, headers):
                        return body, headers
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [b[:120] for b, _ in self.received]
                    raise TimeoutError(f"no matching webhook within {timeout}s; got {kinds}")
                self._cond.wait(remaining)
