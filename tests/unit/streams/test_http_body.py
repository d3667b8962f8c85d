"""Request bodies are read whole, in however many pieces they arrive, up to a limit."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import StreamReader

from streams.agents.http_body import read_body


def _reader(*pieces: bytes, eof: bool = True) -> StreamReader:
    loop = asyncio.get_running_loop()
    reader = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    for piece in pieces:
        reader.feed_data(piece)
    if eof:
        reader.feed_eof()
    return reader


async def test_a_body_arriving_in_pieces_is_read_whole() -> None:
    reader = _reader(b'{"events": [', eof=False)

    async def rest() -> None:
        await asyncio.sleep(0.01)
        reader.feed_data(b'{"id": "EV1"}]}')
        reader.feed_eof()

    task = asyncio.create_task(rest())
    # What the endpoints did: read(limit + 1) returned the first piece only.
    assert await read_body(reader, 1024) == b'{"events": [{"id": "EV1"}]}'
    await task


async def test_the_first_piece_alone_is_what_read_n_returns() -> None:
    reader = _reader(b"abc", eof=False)
    assert await reader.read(1024) == b"abc"  # why read_body exists


@pytest.mark.parametrize(("size", "whole"), [(0, True), (1024, True), (1025, False)])
async def test_the_limit(size: int, whole: bool) -> None:
    body = b"x" * size
    got = await read_body(_reader(body[:500], body[500:]), 1024)
    assert got == (body if whole else None)


async def test_reading_stops_past_the_limit() -> None:
    reader = _reader(b"x" * 600, b"y" * 600, b"z" * 4096)
    assert await read_body(reader, 1024) is None
    assert not reader.at_eof()  # the rest was never pulled into memory by us
