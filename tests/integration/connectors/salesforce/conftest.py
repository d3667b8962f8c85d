"""Fixtures for the Salesforce sandbox tests: a fresh in-memory sandbox and real clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce.api import Salesforce

from connectors.salesforce.sandbox import Sandbox, start_sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with start_sandbox() as running:
        yield running


@pytest.fixture
def sf(sandbox: Sandbox) -> Salesforce:
    """The bus's own session (the "integration" user)."""
    return sandbox.client(user="integration")


@pytest.fixture
def staff_sf(sandbox: Sandbox) -> Salesforce:
    """A human's session (the "staff" user)."""
    return sandbox.client(user="staff")
