"""Running an ASGI app under uvicorn with the bounds a public-facing server needs, on a socket bound here.

- The socket is bound before anything is announced, so a port in use is one line (``PortInUseError``), not
  a banner followed by uvicorn's own error.
- Connections are capped (uvicorn's ``limit_concurrency``: past it, 503), an idle keep-alive connection is
  closed after a few seconds, and the request line and headers must arrive within ``HEADER_SECONDS`` of the
  first byte (or of the connection opening): a client that trickles bytes cannot hold a connection forever.
  Body timeouts are the admission middleware's (``nvrag.api.guard``).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import threading
from typing import Any

from nvrag.api.limits import DEFAULT_MAX_CONNECTIONS, HEADER_SECONDS, KEEP_ALIVE_SECONDS
from nvrag.errors import ConfigError


class PortInUseError(ConfigError):
    """The address and port to serve on are taken by another process."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; PortInUseError if another process has it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and accepted sockets
    # inherit it; with proto 0, Nagle's algorithm held each response's body behind the client's delayed ACK
    # (40 ms on every request after the first on a keep-alive connection)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses a port in TIME_WAIT
    try:
        sock.bind((host, port))
        # listening now holds the port while the models load: with SO_REUSEADDR a second process could
        # otherwise bind it too, and fail only later, in uvicorn's own listen
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is in use by another process; pass --port N") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port") from None
    return sock


def header_timed_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than HEADER_SECONDS."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimedH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that never sends a byte is closed too

        def _awaiting_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(HEADER_SECONDS, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._awaiting_head() and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head():
                self._arm()
            super().data_received(data)
            if not self._awaiting_head():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimedH11


def serve(app: Any, sock: socket.socket, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
    """Serve ``app`` on the bound ``sock`` until interrupted."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM and then raises the signal again for the handler it found:
        # with the default one the process died there, skipping atexit (the folder of received uploads stayed)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=header_timed_protocol(),
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the process through Python (exit status 128 + 15, as the signal would give a shell), so
    that exit handlers run."""
    raise SystemExit(128 + signum)
