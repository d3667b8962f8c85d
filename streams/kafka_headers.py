"""Reading a Kafka record's headers, as the clients hand them over. No I/O.

aiokafka and kafka-python give a list of ``(name, bytes)`` pairs, Faust sometimes a mapping;
the bus's own headers (replay counts, retry times, parking marks) are short ASCII text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None


def header_text(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` as text (None when absent, or not bytes as a Kafka
    client hands them over)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        if key == name:
            return bytes(value).decode(errors="replace") if isinstance(value, bytes) else None
    return None
