"""The scheduler's background services: the scheduler itself, and what only its leader runs.

`SchedulerService` runs in every process: a process that does not run jobs still stores them, so
its scheduler is started, paused. `JobDispatch` (leader-only) catches up with what a crash left
and lets the scheduler run jobs; `RecoverySweep` (leader-only) restores lost jobs periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from scheduler_app.db.engine import database_unavailable, describe_unavailable
from scheduler_app.engine.executor import RegistryExecutor, finish_or_cancel
from scheduler_app.engine.scheduler import OffLoopScheduler

logger = logging.getLogger(__name__)


class SchedulerService:
    """Starts the scheduler paused; stops it after the running jobs, up to timeout_s each.

    What reads the database in a worker thread (a pass over the job store) is let finish first:
    a connection out of the pool when the engine is disposed of would stay open.
    """

    name = "scheduler"
    leader_only = False

    def __init__(
        self, scheduler: OffLoopScheduler, executor: RegistryExecutor, timeout_s: float
    ) -> None:
        self._scheduler = scheduler
        self._executor = executor
        self._timeout_s = timeout_s

    async def start(self) -> None:
        # Paused, so that recovery and reconciling see the store before any job runs; a process
        # that does not lead stays paused: it stores jobs but never runs them.
        self._scheduler.start(paused=True)

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.pause()
        unfinished = await self._executor.drain(self._timeout_s)
        if unfinished:
            logger.warning("%d job(s) did not finish in time; recovery resumes them", unfinished)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback
        if not await self._scheduler.finish_pass(self._timeout_s):
            logger.warning("a pass over the job store did not finish in %ss", self._timeout_s)


class JobDispatch:
    """Lets the scheduler run jobs, once catch_up (what a crash or the previous leader left
    behind) is done; stopping pauses it and waits for the jobs under way, up to timeout_s."""

    name = "job dispatch"
    leader_only = True

    def __init__(
        self,
        scheduler: OffLoopScheduler,
        executor: RegistryExecutor,
        catch_up: Callable[[], Awaitable[object]],
        timeout_s: float,
    ) -> None:
        self._scheduler = scheduler
        self._executor = executor
        self._catch_up = catch_up
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._catch_up()
        self._scheduler.resume()

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.pause()
        # A leader that hands over lets its deliveries finish first: the next leader takes
        # what is still marked running as interrupted, and would deliver it again.
        unfinished = await self._executor.settle(self._timeout_s)
        if unfinished:
            logger.warning(
                "%d job(s) still run after %ss; they go on, and record their outcome once they can",
                unfinished,
                self._timeout_s,
            )


class DuePoll:
    """Every interval_s, a pass over the job store: jobs stored by another process (a task
    created through a follower) fall due on time even without a notification."""

    name = "due poll"
    leader_only = True

    def __init__(self, wakeup: Callable[[], None], interval_s: float) -> None:
        self._wakeup = wakeup
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="due-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._wakeup()


class RecoverySweep:
    """Every interval_s, recover: a reminder whose job could not be stored (a database hiccup)
    is picked up without waiting for a restart. Stopping waits for a pass up to timeout_s."""

    name = "recovery sweep"
    leader_only = True

    def __init__(
        self,
        recover: Callable[[], Awaitable[object]],
        wakeup: Callable[[], None],
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._recover = recover
        self._wakeup = wakeup
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._sweep(), name="reminder-recovery")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await finish_or_cancel({self._task}, self._timeout_s)
            self._task = None

    async def _sweep(self) -> None:
        while not await _set_within(self._stopping, self._interval_s):
            try:
                await self._recover()
                # Jobs stored by processes that do not run the scheduler are due-checked too.
                self._wakeup()
            except Exception as exc:
                if database_unavailable(exc):
                    logger.warning(
                        "reminder recovery pass: database unavailable (%s); retrying in %ss",
                        describe_unavailable(exc),
                        self._interval_s,
                    )
                else:
                    logger.exception(
                        "reminder recovery pass failed; retrying in %ss", self._interval_s
                    )


async def _set_within(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
