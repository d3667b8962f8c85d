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


# --- GoCardless rig (one worker + sandbox per test module; see gocardless_support) ----------


@pytest.fixture(scope="module")
def gc_bus(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.e2e.gocardless_support import gocardless_bus

    with gocardless_bus(broker, tmp_path_factory.mktemp("gocardless-e2e")) as rig:
        yield rig
