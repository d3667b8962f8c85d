"""Find connectors through the ``paybus.connectors`` entry-point group.

The same mechanism faust uses for transports (a name -> class mapping fed by setuptools entry
points), so a third-party package adds a PSP by declaring an entry point, without a change here.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from connectors.base import PspConnector
from connectors.errors import UnknownConnectorError

if TYPE_CHECKING:
    from streams.settings import Settings

GROUP = "paybus.connectors"


@cache
def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of the installed connectors."""
    return sorted(_entry_points())


def connector_class(name: str) -> type[PspConnector]:
    """The connector class registered under ``name``."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, PspConnector)):
                raise UnknownConnectorError(
                    f"entry point {name!r} ({ep.value}) is not a PspConnector subclass"
                )
            return cls
    installed = ", ".join(available()) or "none"
    raise UnknownConnectorError(f"no connector named {name!r} (installed: {installed})")


def load(name: str, settings: Settings) -> PspConnector:
    """An instance of connector ``name`` configured from ``settings``."""
    return connector_class(name)(settings)
