"""A paced HTTP/1.1 POST load generator on keep-alive connections, cheap enough to measure with.

The load generator shares the machine's two cores with the bus it measures, so what it burns
is taken from the bus: aiohttp's client spent about 320 us of CPU per webhook (a quarter of a
core at 1,000/s). This one writes a prebuilt request on an ``asyncio`` stream and reads the
status line, the headers and a ``Content-Length`` body, nothing more; requests wait in a
queue for the first free connection, so a slow answer never delays the next send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Pacing granularity: sends due within one tick go out together.
TICK_S = 0.005


@dataclass
class PostResults:
    """When each POST was sent (wall clock, by its name) and how they were answered."""

    sent_at: dict[str, float] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    achieved_rate: float = 0.0

    @property
    def refused(self) -> int:
        """POSTs not answered 200 (a PSP would send those again)."""
        ok = self.statuses.get(200, 0)
        return sum(self.statuses.values()) - ok + len(self.errors)


def request_bytes(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST, keep-alive."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """The status of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def post_paced(
    url: str,
    items: list[tuple[str, bytes]],
    rate: float,
    headers_for: Callable[[bytes], dict[str, str]],
    connections: int = 128,
) -> PostResults:
    """POST each ``(name, body)`` of ``items`` to ``url`` at ``rate`` per second.

    ``headers_for(body)`` gives a request's headers when it is sent (a signature stamped with
    the time it goes out). Returns the send times by name, the answers and the rate achieved.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results = PostResults()
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                name, body = item
                data = request_bytes(parts.netloc, parts.path, body, headers_for(body))
                results.sent_at[name] = time.time()
                try:
                    writer.write(data)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    results.errors.append(f"{name}: {exc!r}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                results.statuses[status] = results.statuses.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.perf_counter()
    i = 0
    while i < len(items):
        due = min(len(items), int((time.perf_counter() - start) * rate) + 1)
        while i < due:
            queue.put_nowait(items[i])
            i += 1
        await asyncio.sleep(TICK_S)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    results.achieved_rate = len(items) / (time.perf_counter() - start)
    return results
