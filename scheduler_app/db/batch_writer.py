"""Group commit: the database steps of many concurrent jobs share one transaction.

When thousands of reminders fall due together, each delivery records its start, its attempt and
its outcome. One transaction per step costs a commit each (a disk flush on PostgreSQL) and, on
SQLite, a fight for the single write lock. Here one worker thread takes every step queued since
its last commit, runs them in one transaction and commits once; each caller gets its own result
or its own exception. A `Grouped` step goes further: the items that many callers queued for it
are written by one statement.

A step that records something done that cannot be undone (a message sent) is queued
`until_written`: while the database cannot be reached it is held and tried again, for as long as
the writer runs, instead of failing; its caller waits meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from scheduler_app.db.batching import (
    GatherRules,
    group_steps,
    next_retry_delay,
    one_by_one,
    split_held,
)
from scheduler_app.db.engine import SessionFactory, database_unavailable, describe_unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")
# Steps committed together at most; bounds how long one transaction holds its locks.
MAX_BATCH = 256
# While steps keep coming (the next one was queued within BUSY_WITHIN_S of the last commit),
# the writer waits LINGER_S before taking a batch, so that it takes the steps queued meanwhile
# too, as PostgreSQL's commit_delay does for its own commits. In a burst of 5,000 deliveries the
# batches held about four deliveries each; waiting 2 ms cut the writer's CPU time by a quarter,
# PostgreSQL's by a fifth and the drain by a sixth. A step after a quiet spell never waits.
LINGER_S = 0.002
BUSY_WITHIN_S = 0.005
# While busy, a batch of patient steps only (see Grouped.patient) keeps gathering for up to
# PATIENT_S. Each batch has a fixed cost (six round trips to PostgreSQL, a session, a commit):
# with 12 deliveries per batch it was two thirds of the writer's and PostgreSQL's CPU time per
# delivery. In storms of 5,000 reminders on PostgreSQL, batches held about 33 deliveries
# instead of 13; the writer's CPU time fell by a third and PostgreSQL's by a quarter.
PATIENT_S = 0.025
# ... but only after a batch of at least PATIENT_AFTER steps: under a steady trickle (3,000
# reminders over a minute) the steps of one delivery come close together, and gathering would
# add its wait to every delivery (fire lag p50 26-29 ms instead of under 10).
PATIENT_AFTER = 16
# Held steps (see `until_written`) are tried again after HELD_FIRST_RETRY_S, the wait doubling up
# to HELD_MAX_RETRY_S, and at once after any commit succeeds: the database is back. A try costs a
# refused connection; the cap bounds how long recorded outcomes lag behind its return.
HELD_FIRST_RETRY_S = 0.5
HELD_MAX_RETRY_S = 5.0


@dataclass(frozen=True, eq=False)
class Grouped(Generic[Item, T]):
    """A step that many callers make at once: run once per batch with every caller's item,
    returning one result per item, in order."""

    name: str
    run_all: Callable[[Session, list[Item]], list[T]]
    # Within a batch, groups run in ascending phase, so that a step queued without waiting
    # (see `queue_grouped`) can depend on an earlier one that landed in the same batch.
    phase: int = 0
    # Its callers can wait a few tens of milliseconds (bookkeeping of a job, not an answer that
    # a client waits for): while the writer is busy, such steps are gathered into bigger batches.
    patient: bool = False


@dataclass
class _Step(Generic[T]):
    work: Callable[[Session], T] | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    group: Grouped[Any, T] | None = None
    item: Any = None
    until_written: bool = False

    @property
    def patient(self) -> bool:
        return self.group is not None and self.group.patient

    @property
    def name(self) -> str:
        if self.group is not None:
            return self.group.name
        work = getattr(self.work, "func", self.work)  # a partial is named by its function
        return str(getattr(work, "__name__", "write"))


_STOP = object()


class BatchWriter:
    """Runs database steps in one worker thread, committing the steps queued together at once.

    A step receives the session and must neither commit nor roll back. Should one step of a batch
    fail, the batch is rolled back and each of its steps is run again in a transaction of its own,
    so a failure only ever reaches the step that caused it. Steps queued `until_written` that
    meet a database it cannot reach are held, in the order they came, and tried again (see
    HELD_FIRST_RETRY_S); later ones queue up behind them, so that each is written after those
    queued before it (a run's finish after its start). Stopping gives them one last try.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        max_batch: int = MAX_BATCH,
        linger_s: float = LINGER_S,
        patient_s: float = PATIENT_S,
        patient_after: int = PATIENT_AFTER,
        held_retry_s: float = HELD_FIRST_RETRY_S,
        held_retry_max_s: float = HELD_MAX_RETRY_S,
    ) -> None:
        self._sessions = sessions
        engine = sessions.kw.get("bind")
        if not isinstance(engine, Engine):
            raise TypeError("the database writer needs sessions bound to an engine")
        self._engine = engine
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._gather_rules = GatherRules(max_batch, BUSY_WITHIN_S, patient_s, patient_after)
        self._held_retry_s = held_retry_s
        self._held_retry_max_s = held_retry_max_s
        self._last_batch_size = 0
        self._last_commit_ended = float("-inf")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Kept from one batch to the next: taking a connection from the pool for each batch
        # pinged the server first on PostgreSQL (the engine's pre-ping), a sixth of the
        # writer's time in a storm. Given back after a failed batch, so that the next batch
        # takes a connection the pool has checked.
        self._connection: Connection | None = None
        # Steps until_written that the database did not take yet, oldest first; what it said;
        # when they are tried next and the wait after that; since when, and how many, for the log.
        self._held: list[_Step[Any]] = []
        self._held_error: Exception | None = None
        self._retry_at = 0.0
        self._retry_delay = held_retry_s
        self._held_since = 0.0
        self._held_count = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="db-batch-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued and what is held, then end the worker thread. Held steps that
        still cannot be written are given up (their futures cancelled) and logged."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        self._thread = None

    async def run(self, work: Callable[[Session], T], *, until_written: bool = False) -> T:
        """Run work(session) in the next batch; its result, or its exception.

        until_written: while the database cannot be reached, hold the step and try it again for
        as long as the writer runs, instead of raising: for the record of something done that
        cannot be undone. Other errors are raised as usual.
        """
        return await self.queue(work, until_written=until_written)

    async def run_grouped(
        self, step: Grouped[Item, T], item: Item, *, until_written: bool = False
    ) -> T:
        """Add item to the next batch's call of step; this item's result, or the exception."""
        return await self.queue_grouped(step, item, until_written=until_written)

    def queue(
        self, work: Callable[[Session], T], *, until_written: bool = False
    ) -> asyncio.Future[T]:
        """run() without waiting for it."""
        return self._queue_step(work, None, None, until_written)

    def queue_grouped(
        self, step: Grouped[Item, T], item: Item, *, until_written: bool = False
    ) -> asyncio.Future[T]:
        """Add item to the next batch's call of step without waiting for it: steps are written
        in the order they were queued, so a later step may rely on this one."""
        return self._queue_step(None, step, item, until_written)

    def _queue_step(
        self,
        work: Callable[[Session], T] | None,
        group: Grouped[Any, T] | None,
        item: Any,
        until_written: bool,
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            future.set_exception(RuntimeError("the database writer is not running"))
            return future
        self._queue.put(_Step(work, loop, future, group, item, until_written))
        return future

    def _work(self) -> None:
        try:
            self._take_batches()
            self._last_try()
        finally:
            self._give_back_connection()

    def _take_batches(self) -> None:
        while True:
            if self._held and time.monotonic() >= self._retry_at:
                self._retry_held()
                continue
            try:
                first = self._queue.get(timeout=self._until_retry())
            except queue.Empty:
                continue
            if first is _STOP:
                return
            batch: list[_Step[Any]] = [first]
            stopping = self._gather(batch)
            self._write(batch)
            self._last_commit_ended = time.monotonic()
            self._last_batch_size = len(batch)
            if stopping:
                return

    def _gather(self, batch: list[_Step[Any]]) -> bool:
        """Add the steps queued meanwhile to batch, waiting for more while steps keep coming
        (see GatherRules); True when the writer was asked to stop."""
        gathering = self._gather_rules.start(
            time.monotonic(), self._last_commit_ended, self._last_batch_size
        )
        if gathering is None:
            return self._take_queued(batch)
        checked = 0  # the first step counts too: a batch is patient if all its steps are
        while True:
            time.sleep(self._linger_s)
            if self._take_queued(batch):
                return True
            added = [step.patient for step in batch[checked:]]
            checked = len(batch)
            if not gathering.keeps_gathering(added, checked, time.monotonic()):
                return False

    def _take_queued(self, batch: list[_Step[Any]]) -> bool:
        """Move queued steps into batch, up to its limit; True when a stop was among them."""
        while len(batch) < self._max_batch:
            try:
                step = self._queue.get_nowait()
            except queue.Empty:
                return False
            if step is _STOP:
                return True
            batch.append(step)
        return False

    def _until_retry(self) -> float | None:
        """How long to wait for a new step before the held ones are due (None: no end)."""
        return max(self._retry_at - time.monotonic(), 0.0) if self._held else None

    def _write(self, batch: list[_Step[Any]]) -> None:
        """Commit a batch of new steps, holding those that must be written and cannot be."""
        if self._held:
            # Behind the steps held already: each is written after those queued before it.
            waiting, batch = split_held(batch)
            self._held.extend(waiting)
            self._held_count += len(waiting)
            if not batch:
                return
        unwritten = self._commit(batch)
        if unwritten:
            self._held_since = time.monotonic()
            self._held_count = len(unwritten)
            self._held = unwritten
            self._retry_delay = self._held_retry_s
            self._back_off()

    def _retry_held(self) -> bool:
        """Try the oldest held steps again (a batch of them); whether they were written."""
        held, self._held = self._held, []
        tried = held[: self._max_batch]
        unwritten = self._commit(tried)
        self._held = unwritten + held[len(tried) :]
        if unwritten:
            self._back_off()
            return False
        self._retry_delay = self._held_retry_s
        if not self._held:
            logger.info(
                "the database is back: %d write(s) that waited %.0f s for it are made",
                self._held_count,
                time.monotonic() - self._held_since,
            )
        return True

    def _back_off(self) -> None:
        logger.warning(
            "database unreachable (%s): %d write(s) wait for it; next try in %.1f s",
            _reason(self._held_error),
            len(self._held),
            self._retry_delay,
        )
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = next_retry_delay(self._retry_delay, self._held_retry_max_s)

    def _last_try(self) -> None:
        """At stop: the held steps are tried once more; those the database still does not
        take are given up, with a count of each kind."""
        while self._held and self._retry_held():
            pass
        if not self._held:
            return
        kinds = Counter(step.name for step in self._held)
        logger.error(
            "stopping without %d write(s) that the database, unreachable for %.0f s (%s), "
            "did not take: %s",
            len(self._held),
            time.monotonic() - self._held_since,
            _reason(self._held_error),
            ", ".join(f"{count} x {name}" for name, count in kinds.most_common()),
        )
        for step in self._held:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
                step.loop.call_soon_threadsafe(step.future.cancel)
        self._held = []

    def _commit(self, batch: list[_Step[Any]]) -> list[_Step[Any]]:
        """Write batch in one transaction and hand each caller its outcome; returns the steps
        to hold (those until_written that met a database it could not reach), in order."""
        kept = self._connection is not None
        connected = committing = False
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            connected = True
            # Bound to a connection outside any transaction, the session begins and commits
            # one of its own on it.
            with self._sessions(bind=self._connection) as session:
                results = self._run_batch(batch, session)
                committing = True
                session.commit()
        except Exception as exc:
            lost = self._connection is not None and self._connection.invalidated
            self._give_back_connection()
            if lost and kept and not committing:
                # The kept connection died after the last batch (a database restart, an idle
                # timeout): nothing of this batch was written, so it runs again on a
                # connection that the pool checks first.
                return self._commit(batch)  # the connection was given back: a new one
            if len(batch) == 1 or not connected:
                # Without a connection no step ran: each on its own would fail alike.
                return self._fail(batch, exc)
            return one_by_one(batch, lambda step: self._commit([step]))
        if self._held:
            self._retry_at = 0.0  # the database is back: the held steps are tried at once
            self._retry_delay = self._held_retry_s
        _settle(batch, results, None)
        return []

    def _fail(self, batch: list[_Step[Any]], error: Exception) -> list[_Step[Any]]:
        """Hand each step the error, except those to hold: returned, in order."""
        if not database_unavailable(error):
            _settle(batch, [], error)
            return []
        self._held_error = error
        held, others = split_held(batch)
        _settle(others, [], error)
        return held

    def _give_back_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                logger.debug("the writer's connection did not close cleanly", exc_info=True)

    def _run_batch(self, batch: list[_Step[Any]], session: Session) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        singles, groups = group_steps([step.group for step in batch])
        for index in singles:
            work = batch[index].work
            assert work is not None
            results[index] = self._in_own_session(session.connection(), work)
        # Grouped steps share the batch's session: they write with a few Core statements and
        # load little or nothing, so a session each would cost more than it keeps apart.
        for group, indexes in groups:
            outcomes = group.run_all(session, [batch[index].item for index in indexes])
            session.flush()
            for index, outcome in zip(indexes, outcomes, strict=True):
                results[index] = outcome
        return results

    def _in_own_session(self, connection: Connection, work: Callable[[Session], T]) -> T:
        # A session of its own per step, inside the batch's transaction: each keeps a small
        # identity map, so an UPDATE never has to reconcile the objects of every other step.
        with self._sessions(bind=connection) as session:
            result = work(session)
            session.flush()
            return result


def _reason(error: Exception | None) -> str:
    return "no error recorded" if error is None else describe_unavailable(error)


def _settle(batch: list[_Step[Any]], results: list[Any], error: Exception | None) -> None:
    """Hand each caller its result (or the error), with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for index, step in enumerate(batch):
        outcome = error if error is not None else results[index]
        by_loop.setdefault(step.loop, []).append((step.future, outcome))
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, outcomes, error is not None)
        except RuntimeError:  # the loop closed: nobody is waiting any more
            logger.debug("a database step finished after its event loop closed")


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any]], failed: bool) -> None:
    for future, outcome in outcomes:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
