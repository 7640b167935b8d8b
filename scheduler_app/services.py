"""Background services: what runs beside the requests, started and stopped in one place.

Each service has a name, starts, and stops. `Services` starts them in the order given and stops
them in the reverse order, so that a service may rely on those listed before it for as long as it
runs. The services marked `leader_only` run in the one process that runs the scheduler: they are
started and stopped by calls of their own (`start_leader`, `stop_leader`), which whatever decides
who leads can drive; the others run in every process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

logger = logging.getLogger(__name__)


class BackgroundService(Protocol):
    """Work that runs beside the requests for as long as the process (or its leadership) lasts.

    `stop` bounds its own wait (each service is given its timeout when built) and returns once
    what it started has ended or been given up.
    """

    @property
    def name(self) -> str: ...

    @property
    def leader_only(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Services:
    """Starts services in order and stops them in reverse, logging which one failed."""

    def __init__(self, services: Sequence[BackgroundService] = ()) -> None:
        self._shared = [service for service in services if not service.leader_only]
        self._leader = [service for service in services if service.leader_only]
        self._started: list[BackgroundService] = []
        self._leading: list[BackgroundService] = []

    @property
    def leading(self) -> bool:
        """Whether the leader-only services run here."""
        return bool(self._leading)

    async def start(self) -> None:
        """Start every service that runs in each process, in order.

        Should one fail, those started before it are stopped and its exception raised.
        """
        await _start_each(self._shared, self._started)

    async def start_leader(self) -> None:
        """Start the leader-only services, in order; after `start`.

        Should one fail, the leader-only ones started before it are stopped and its exception
        raised; the others keep running.
        """
        await _start_each(self._leader, self._leading)

    async def stop_leader(self) -> list[str]:
        """Stop the leader-only services, in reverse order; the names of those that failed."""
        return await _stop_each(self._leading)

    async def stop(self) -> list[str]:
        """Stop every service started, leader-only ones first, each in reverse order.

        A failure is logged and the next service stopped all the same; the names of those that
        failed are returned.
        """
        return await self.stop_leader() + await _stop_each(self._started)


async def _start_each(services: list[BackgroundService], started: list[BackgroundService]) -> None:
    for service in services:
        if service in started:
            continue
        try:
            await service.start()
        except BaseException as exc:
            if isinstance(exc, Exception):  # not a cancellation
                logger.exception("background service %r failed to start", service.name)
            await _stop_each(started)
            raise
        started.append(service)


async def _stop_each(started: list[BackgroundService]) -> list[str]:
    failed: list[str] = []
    while started:
        service = started.pop()
        try:
            await service.stop()
        except Exception:
            logger.exception("background service %r failed to stop", service.name)
            failed.append(service.name)
    return failed


class _Worker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class WorkerThread:
    """A worker that runs in a thread of its own (its `start` and `stop` block); its default
    timeout for stopping applies."""

    leader_only = False

    def __init__(self, name: str, worker: _Worker) -> None:
        self.name = name
        self._worker = worker

    async def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        # Stopping joins the thread: off the event loop, which other work still needs meanwhile.
        await asyncio.to_thread(self._worker.stop)


class ClosedOnStop:
    """A resource with nothing to start that is closed on stop (a mail backend's connections)."""

    leader_only = False

    def __init__(self, name: str, close: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._close = close

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._close()
