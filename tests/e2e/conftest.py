"""End-to-end fixtures: localstripe behind the idempotency proxy, flushed per test."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def localstripe(_localstripe_session: Any) -> Any:
    _localstripe_session.reset()
    return _localstripe_session


@pytest.fixture
def proxy(localstripe: Any, _proxy_session: Any) -> Any:
    _proxy_session.reset()
    return _proxy_session
