"""The server's own socket (api/runner.py): a port in use is one line, and every accepted connection sends its
responses at once (TCP_NODELAY), as asyncio does for sockets it creates itself."""

from __future__ import annotations

import asyncio
import socket

import pytest

from nvrag.api.runner import PortInUseError, bind


def test_a_port_in_use_is_one_error_naming_it() -> None:
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            bind("127.0.0.1", port)
    finally:
        first.close()


def test_accepted_connections_do_not_wait_for_acks() -> None:
    """With Nagle's algorithm on, a response written in two parts (head, then body) waited for the client's
    delayed ACK: 40 ms on every request after a keep-alive connection's first. asyncio turns it off only for
    sockets whose proto is TCP, which an accepted socket inherits from the listening one."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(run())
    assert seen == [1]
