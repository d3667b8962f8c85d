"""A Salesforce REST sandbox: a real HTTPS server on loopback for the demo and the tests.

It speaks the subset of the REST API the paybus Salesforce connector uses (sObjects, upsert by
external id, SOQL queries with paging, sObject Collections, Composite, limits) so the real
``simple_salesforce`` client runs against it unchanged; ``/_sandbox/...`` adds fault injection,
raw access and a log of record saves (with wall-clock times, for the benchmarks) for tests.
Start it with :func:`start_sandbox` or
``python -m connectors.salesforce.sandbox``.
"""

from .faults import ValidationRule
from .schema import ApiError, FieldSpec, ObjectSpec, default_objects
from .server import (
    DEFAULT_TOKENS,
    DEFAULT_VERSION,
    Sandbox,
    SandboxAdmin,
    make_salesforce,
    start_sandbox,
)

__all__ = [
    "DEFAULT_TOKENS",
    "DEFAULT_VERSION",
    "ApiError",
    "FieldSpec",
    "ObjectSpec",
    "Sandbox",
    "SandboxAdmin",
    "ValidationRule",
    "default_objects",
    "make_salesforce",
    "start_sandbox",
]
