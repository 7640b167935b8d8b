"""Serving the app with uvicorn: the listening socket taken first, slow clients timed out."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scheduler_app.settings import ServerSettings


class ListenError(Exception):
    """The address to listen on cannot be taken."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening, or ListenError naming the address.

    Taken before anything else starts: a second service on a port in use must not run its
    scheduler on the same database for the moment it takes uvicorn to find out. Listening at
    once, too: two sockets bound to one port (SO_REUSEADDR) are allowed until one listens.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(f"cannot listen on {shown}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def request_head_timeout(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, closing a connection that has not sent a whole request head
    within timeout_s of connecting or of its previous answer.

    uvicorn times a connection out only while it idles between two requests: one that connects
    and sends nothing, or sends its head a byte at a time, is kept open for ever (3,000 such
    connections stayed open against one process).
    """

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def on_headers_complete(self) -> None:
            self._stop_waiting()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_waiting()
            self._head_deadline = self.loop.call_later(timeout_s, self._too_slow)

        def _stop_waiting(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _too_slow(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


def uvicorn_config(app: Any, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration with the service's limits for clients."""
    return uvicorn.Config(
        app,
        http=request_head_timeout(settings.request_head_timeout_s),
        timeout_keep_alive=settings.timeout_keep_alive_s,
        limit_concurrency=settings.limit_concurrency or None,
        proxy_headers=True,
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
        **options,
    )
