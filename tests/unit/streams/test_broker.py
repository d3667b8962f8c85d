"""The embedded broker refuses a port that is taken instead of reporting someone else's."""

from __future__ import annotations

import socket

import pytest

from streams.broker import BrokerUnavailable, EmbeddedBroker, free_port, port_taken


def test_a_taken_port_is_refused_before_tansu_starts() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        assert port_taken("127.0.0.1", port)
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerUnavailable, match=f"^port {port} is already in use"):
            broker.start()
        assert broker.process is None  # nothing was spawned


def test_a_free_port_is_not_taken() -> None:
    assert not port_taken("127.0.0.1", free_port())
