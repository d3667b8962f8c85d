"""The error root of paybus.

Every error paybus raises on purpose derives from :class:`PaybusError`, so callers (the CLI,
the agents' outcome accounting) can tell our named failures from bugs. Connector errors live in
``connectors.base`` and derive from it too.
"""

from __future__ import annotations


class PaybusError(Exception):
    """Root of every error paybus raises on purpose."""


class ConfigurationError(PaybusError):
    """The configuration cannot work; the message says what to change."""


class DecodeError(PaybusError):
    """Bytes on a topic that cannot be decoded, with where they came from."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = ""
        if topic is not None:
            where = f" at {topic}[{partition}]@{offset}"
        super().__init__(f"cannot decode record{where}: {reason}")

    def at(self, topic: str, partition: int, offset: int) -> DecodeError:
        """The same error, located (the codec does not know where its bytes came from)."""
        return DecodeError(self.reason, topic=topic, partition=partition, offset=offset)


class ValidationError(PaybusError):
    """A record that does not fit its schema (before it is ever published)."""


class InputError(PaybusError):
    """A file the user named that cannot be used: missing, unreadable, not UTF-8, not JSON.

    The message starts with where (``FILE``, ``FILE:LINE`` or ``FILE:LINE:COL``), so the CLI
    prints it as it is and an editor can jump there.
    """
