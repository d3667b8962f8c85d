"""Shared fixtures: one embedded broker per test session, started only when a test needs it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free loopback port for the whole session."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    running = EmbeddedBroker(log_path=log).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix, so tests sharing the session broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PAYBUS_* from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("PAYBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- localstripe (one per session: it keeps its store in module globals) -------------------


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[Any]:
    """An event loop in a thread, for in-process aiohttp servers (localstripe, proxies)."""
    from tests.support.localstripe import LoopThread

    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def _localstripe_session(loop_thread: Any) -> Iterator[Any]:
    from tests.support.localstripe import start_localstripe

    with start_localstripe(loop_thread) as running:
        yield running


@pytest.fixture(scope="session")
def _proxy_session(loop_thread: Any, _localstripe_session: Any) -> Iterator[Any]:
    """localstripe behind a proxy that honours Stripe's Idempotency-Key semantics."""
    from tests.support.stripe_idempotency import IdempotencyProxy

    proxy = IdempotencyProxy(_localstripe_session.base_url).start(loop_thread)
    yield proxy
    proxy.stop(loop_thread)
