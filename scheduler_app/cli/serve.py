"""Serving the app with uvicorn: the listening socket taken first, slow clients timed out, one
process or several worker processes on the one socket."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess

from scheduler_app.errors import ConfigError
from scheduler_app.logs import logging_config
from scheduler_app.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

# Seconds a worker process has to answer the supervisor's health check.
WORKER_HEALTHCHECK_TIMEOUT_S = 30
# How often a worker process looks whether its supervisor is still there.
ORPHAN_CHECK_INTERVAL_S = 1.0
logger = logging.getLogger(__name__)


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


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection that has not sent a whole request head
    within the configuration's request_head_timeout_s of connecting or of its previous answer.

    uvicorn times a connection out only while it idles between two requests: one that connects
    and sends nothing, or sends its head a byte at a time, is kept open for ever (3,000 such
    connections stayed open against one process). The timeout is read from the configuration
    (a ServiceConfig), which worker processes receive pickled: a class made per timeout could
    not be.
    """

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
        timeout_s = cast(ServiceConfig, self.config).request_head_timeout_s
        self._head_deadline = self.loop.call_later(timeout_s, self._too_slow)

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class ServiceConfig(uvicorn.Config):
    """uvicorn's configuration, with the time a client has to send a request head."""

    def __init__(self, app: Any, *, request_head_timeout_s: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.request_head_timeout_s = request_head_timeout_s


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> ServiceConfig:
    """uvicorn's configuration with the service's limits for clients and its logging."""
    server = settings.server
    return ServiceConfig(
        app,
        request_head_timeout_s=server.request_head_timeout_s,
        http=HeadTimeoutProtocol,
        timeout_keep_alive=server.timeout_keep_alive_s,
        limit_concurrency=server.limit_concurrency or None,
        proxy_headers=True,
        forwarded_allow_ips=list(server.forwarded_allow_ips),
        # The service's own configuration instead of uvicorn's: its lines and uvicorn's in one
        # format. A worker process of `--workers N` applies it before it logs anything.
        log_config=logging_config(settings.log.format, settings.log_level),
        log_level=settings.log_level,
        # Answering the supervisor's health check starts only once a worker has imported what
        # it needs; several workers starting together on a busy host can take longer than
        # uvicorn's default of 5 s, and a worker not answering in time is killed.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
        **options,
    )


def configure_logging(settings: Settings) -> None:
    """The process's logging: the format of settings.log, at settings.log_level, on stderr."""
    logging.config.dictConfig(logging_config(settings.log.format, settings.log_level))
    # Python's warnings as log lines in the same format, not as bare text among them.
    logging.captureWarnings(True)


def service_app(settings: Settings) -> FastAPI:
    """The service's app, for the process that serves it."""
    from scheduler_app.app import create_app

    application = create_app(settings)
    # Everything imported so far lives as long as the process: leaving it out of the cyclic
    # garbage collector's full passes shortens the pauses that delay API answers under load.
    gc.freeze()
    return application


def worker_app(config_file: Path | None, supervisor: int) -> FastAPI:
    """The app of one worker process of `serve --workers N`, called in the worker.

    Its settings are read as the parent's were: from the same configuration file, and from the
    .env file and SCHEDULER_* variables of the working folder and environment it inherits.

    Args:
        config_file: the configuration file the supervisor read, if any.
        supervisor: the supervising process's id; the worker stops when that process is gone.
    """
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:  # the file changed since the parent read it
        print(f"scheduler-app: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    # uvicorn applied the supervisor's log_config (uvicorn_config) in this worker already; this
    # completes it as in a single process.
    configure_logging(settings)
    stop_when_orphaned(supervisor)
    return service_app(settings)


def stop_when_orphaned(parent: int) -> None:
    """Send this process SIGTERM, which stops it cleanly, once `parent` is not (or no longer)
    its parent.

    A supervisor killed without warning (SIGKILL) stops no worker: left running, they would
    keep the port taken from the service started next.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_INTERVAL_S)
        logger.warning("the supervising process %d is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_workers(config: uvicorn.Config, sock: socket.socket) -> int:
    """Serve on sock with config.workers processes until SIGTERM or SIGINT; the exit status.

    uvicorn's supervisor starts the workers (each calls config.app to build its app), starts
    one again when it dies, replaces them one by one on SIGHUP, and on SIGTERM or SIGINT stops
    them all and waits for each to finish its shutdown. A worker that fails to start stops
    them all: status 3, as a single process that fails to start.
    """
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0
