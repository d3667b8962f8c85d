"""Reading a request body whole, up to a limit, for the worker's POST endpoints.

aiohttp's ``StreamReader.read(n)`` returns *up to* ``n`` bytes: whatever is buffered when it
is called, as soon as anything is. A body that arrives in more than one piece (a webhook
batch over a few TCP segments, a chunked upload, a slow client) was cut at the first piece,
so a genuine, validly signed webhook failed verification (400: the PSP gives up after its
retries and the event is lost to the bus) and a CRM push was refused as badly signed. This
reads until the end of the body, and stops reading as soon as the body is over the limit,
so an unauthenticated sender still cannot make the worker buffer more than ``limit + 1``.
"""

from __future__ import annotations

from typing import Protocol


class _Content(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_body(content: _Content, limit: int) -> bytes | None:
    """The whole body of ``content``, or None when it is longer than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
