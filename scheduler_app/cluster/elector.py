"""The elector: holds the scheduler's lease or seeks it, and starts or stops the leader's work.

Every process runs one. A follower looks at the lease every `Timing.poll_every_s` (at once when
notified) and takes it once nobody holds it, or at once when its holder is a dead process of
this machine. The leader renews it every `Timing.renew_every_s`; a leader that loses it, is asked
to step down, or cannot renew for `Timing.step_down_after_s` closes its fence first (nothing new
starts), then stops the leader's services. Any error while seeking the lease means "not leader".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine

from scheduler_app.cluster import lease, members
from scheduler_app.cluster.fence import Fence
from scheduler_app.cluster.identity import ProcessIdentity
from scheduler_app.cluster.timing import Timing
from scheduler_app.db.engine import database_unavailable, describe_unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
Monotonic = Callable[[], float]
# How long stopping waits for the election loop to end (a step under way finishes first).
STOP_WAIT_S = 5.0


class Elector:
    """A background service of every process (see scheduler_app.services)."""

    name = "leader election"
    leader_only = False

    def __init__(
        self,
        *,
        engine: Engine,
        me: ProcessIdentity,
        fence: Fence,
        timing: Timing,
        eligible: bool,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[object]],
        announce: Callable[[str], None] = lambda _message: None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        """
        Args:
            engine: the service's database.
            me: this process.
            fence: the term this process leads under; written here only.
            timing: lease length and the intervals derived from it.
            eligible: False for a process that never leads (scheduler.enabled: false).
            on_elected: starts the leader's services (catch-up first).
            on_deposed: stops them; returns once the jobs under way have finished or been
                given up.
            announce: tells the other processes that the lease changed (a notification).
            monotonic: the clock of the renewal deadlines.
        """
        self._engine = engine
        self.me = me
        self._fence = fence
        self._timing = timing
        self._eligible = eligible
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._announce = announce
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._renewed_at = 0.0
        self._reported_at: float | None = None
        self._pause_until = 0.0
        self._unavailable = False
        self._start_failed = False
        self._stopping = False

    @property
    def term(self) -> int | None:
        return self._fence.term

    @property
    def leading(self) -> bool:
        return self._fence.term is not None

    @property
    def timing(self) -> Timing:
        return self._timing

    async def start(self) -> None:
        """Report this process and, if the lease is free, lead before returning: a single
        process runs its scheduler as soon as it has started."""
        try:
            await self._db(members.register, self.me)
            self._reported_at = self._monotonic()
        except Exception as exc:
            self._database_trouble("reporting this process", exc)
        if self._eligible:
            await self._seek()
            if self._starting is not None:
                await asyncio.shield(self._starting)
        self._loop_task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        """Stop seeking; a leader stops its services (letting its jobs finish) and then gives
        the lease up at once, so that a follower takes over without waiting for it to run out."""
        # Ended by the loop itself, between two steps: a cancellation that lands as a renewal
        # returns can be lost (asyncio.wait_for on Python 3.11), leaving the stop waiting.
        self._stopping = True
        self._wake.set()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if pending:
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if self.leading:
            await self._step_down("this process is stopping", give_up=True, level=logging.INFO)
        with contextlib.suppress(Exception):
            await self._db(members.leave, self.me)

    def wake(self) -> None:
        """Look at the lease now (a notification that it changed)."""
        self._wake.set()

    async def resign(self) -> bool:
        """Step down now if leading, and leave the lease to the others for a moment; whether
        this process led."""
        if not self.leading:
            return False
        self._pause_until = self._monotonic() + self._timing.resign_pause_s
        await self._step_down("asked to step down", give_up=True, level=logging.INFO)
        return True

    async def _run(self) -> None:
        while not self._stopping:
            interval = self._timing.renew_every_s if self.leading else self._timing.poll_every_s
            # asyncio.timeout rather than wait_for: on Python 3.11, cancelling a wait_for on an
            # event at the moment it is set could leave the stop waiting for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._report()
                if self.leading and self._start_failed:
                    self._start_failed = False
                    self._pause_until = self._monotonic() + self._timing.resign_pause_s
                    await self._step_down("its services could not start", give_up=True)
                elif self.leading:
                    await self._renew()
                elif self._eligible and self._monotonic() >= self._pause_until:
                    await self._seek()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("leader election: unexpected error; trying again")

    async def _report(self) -> None:
        now = self._monotonic()
        if self._reported_at is not None and now - self._reported_at < self._timing.report_every_s:
            return
        try:
            await self._db(members.report, self.me)
            if self.leading:
                await self._db(members.forget_gone, self._timing.forgotten_after_s)
            self._reported_at = now
        except Exception as exc:
            self._database_trouble("reporting this process", exc)

    async def _seek(self) -> None:
        """Take the lease if it is free, or held by a dead process of this machine."""
        sent = self._monotonic()
        try:
            held = await self._db(self._acquire)
        except Exception as exc:
            self._database_trouble("looking at the lease", exc)
            return
        self._database_back()
        if held is None:
            return
        self._renewed_at = sent
        self._fence.term = held.term
        logger.info("leading: this process (%s) holds the lease, term %d", self.me.id, held.term)
        self._announce("lease")
        self._starting = asyncio.create_task(self._start_leading(), name="leader-start")

    def _acquire(self, connection: Connection) -> lease.Held | None:
        state = lease.read(connection)
        if not state.held:
            return lease.acquire(connection, self.me.id, self._timing.lease_s)
        if state.holder is None or state.holder == self.me.id:
            return None
        holder = members.find(connection, state.holder)
        if holder is not None and self.me.sees_dead(holder.node, holder.pid):
            taken = lease.take_over(
                connection, self.me.id, state.holder, state.term, self._timing.lease_s
            )
            if taken is not None:
                logger.warning(
                    "the leader (pid %d on this machine) is gone: taking its lease over",
                    holder.pid,
                )
            return taken
        return None

    async def _start_leading(self) -> None:
        try:
            await self._on_elected()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the leader's services failed to start; giving the lease up")
            self._start_failed = True
            self._wake.set()

    async def _renew(self) -> None:
        term = self._fence.term
        assert term is not None
        sent = self._monotonic()
        deadline = self._renewed_at + self._timing.step_down_after_s
        try:
            async with asyncio.timeout(max(deadline - sent, 0.05)):
                renewed = await self._db(lease.renew, self.me.id, term, self._timing.lease_s)
        except Exception as exc:
            self._database_trouble("renewing the lease", exc)
            if self._timing.must_step_down(self._renewed_at, self._monotonic()):
                await self._step_down(
                    f"the lease could not be renewed for {self._timing.step_down_after_s:g} s"
                )
            return
        self._database_back()
        if renewed is None:
            await self._step_down("the lease is held by another process now, or ran out")
            return
        self._renewed_at = sent
        if renewed.resign_requested:
            self._pause_until = self._monotonic() + self._timing.resign_pause_s
            await self._step_down(
                "an operator asked the leader to step down", give_up=True, level=logging.INFO
            )

    async def _step_down(
        self, reason: str, *, give_up: bool = False, level: int = logging.WARNING
    ) -> None:
        """Stop leading; level: how the log tells it (a warning unless it was asked for)."""
        term = self._fence.term
        # First: from here on, nothing new starts in this process.
        self._fence.term = None
        logger.log(level, "no longer leading (term %s): %s", term, reason)
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        try:
            await self._on_deposed()
        except Exception:
            logger.exception("stopping the leader's services failed")
        if give_up and term is not None:
            try:
                await self._db(lease.resign, self.me.id, term)
                self._announce("lease")
            except Exception as exc:
                self._database_trouble("giving the lease up", exc)

    async def _db(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(self._in_transaction, work, *args)

    def _in_transaction(self, work: Callable[..., T], *args: object) -> T:
        with self._engine.begin() as connection:
            return work(connection, *args)

    def _database_trouble(self, doing: str, exc: Exception) -> None:
        if not database_unavailable(exc):
            logger.error("leader election: %s failed: %s", doing, exc)
            return
        if not self._unavailable:
            logger.warning(
                "leader election: database unavailable while %s (%s)",
                doing,
                describe_unavailable(exc),
            )
            self._unavailable = True

    def _database_back(self) -> None:
        if self._unavailable:
            logger.info("leader election: database available again")
            self._unavailable = False
