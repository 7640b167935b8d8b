"""Run stored jobs by registry name, handing each job function the service's JobContext.

Every APScheduler job stored by this service points at `registered_job` and carries the registry
name as its first argument. The stored pickle thus names a stable entry point, never the module
path of a job function, so job functions can be moved or renamed without orphaning stored jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NoReturn, Protocol, TypeVar

from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from scheduler_app.channels import Channel
from scheduler_app.clock import Clock
from scheduler_app.cluster.fence import Fence, Fenced
from scheduler_app.db.batch_writer import BatchWriter, Grouped
from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import RunOutcome
from scheduler_app.engine import runs
from scheduler_app.engine.observer import NO_OBSERVER, RunObserver
from scheduler_app.engine.runs import RunEnd
from scheduler_app.engine.slots import JobSlots
from scheduler_app.errors import Conflict
from scheduler_app.ids import new_id
from scheduler_app.logs import end_job, start_job
from scheduler_app.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")
NOT_STARTED = (
    "not started: the service was shutting down (a reminder is recovered at the next start)"
)
# Beyond this many overdue runs of one job, the missed record says "N+" instead of listing all.
MAX_MISSED_RECORDS = 100
# Set in the context of each job's task, so that JobContext.work_done, called by the job with no
# reference to the executor, reaches the executor that runs it: gives up the task's slot.
_free_slot: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "free_slot", default=None
)
# Likewise for JobContext.attempt_ended: tells the executor's observer how a task's attempt
# ended, under the name of the job that the executor runs.
_attempt_ended: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "attempt_ended", default=None
)


class Missed(Exception):
    """Raised by a job function that decided not to run: recorded as a missed run."""


class RetryLater(Exception):
    """Raised by a job function whose attempt failed but may succeed later: the run is
    recorded as an error and the same job is scheduled once more at `at`."""

    def __init__(self, at: datetime, reason: str) -> None:
        super().__init__(f"{reason}; next attempt at {at.isoformat()}")
        self.at = at


class Superseded(Exception):
    """Raised by a task's job function whose failed attempt is no longer the task's current
    one (cancelled meanwhile, or run again by a new leader): recorded as an error run, and
    nothing is scheduled."""


@dataclass(frozen=True)
class JobContext:
    """What a job function may use: passed in, never imported from a global."""

    settings: Settings
    sessions: SessionFactory
    # The delivery channels by name (channels.EMAIL ...): jobs never import a transport.
    channels: Mapping[str, Channel[Any]]
    clock: Clock
    # Short writes that many jobs make at once (delivery bookkeeping) go through here.
    writer: BatchWriter
    # The leadership term the leader's work starts under (see cluster.fence); unenforced for a
    # context made outside a running service.
    fence: Fence = field(default_factory=lambda: Fence(enforced=False))

    def work_done(self) -> None:
        """Tell the executor that the calling job's work is done and it only records the
        outcome from here on: its slot goes to the next job waiting for one.

        The job still counts as running until it returns (the same job never starts twice at
        once, and a shutdown waits for it). At most max_concurrent_jobs jobs record their
        outcome without a slot; beyond that a job keeps its slot.
        """
        free = _free_slot.get()
        if free is not None:
            free()

    def attempt_ended(self, outcome: str) -> None:
        """Tell the executor how the calling task's attempt ended (an AttemptOutcome of
        tasks/runner.py), for the metrics; nothing outside a running executor."""
        ended = _attempt_ended.get()
        if ended is not None:
            ended(outcome)


JobFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class RegisteredJob:
    name: str
    func: JobFunction
    description: str
    # False for internal jobs (reminder delivery) that config.yaml may not name.
    configurable: bool = True
    # A job that must run even when config.yaml does not name it (maintenance): its entry when
    # no entry of the file runs this job. An entry of the file replaces it (enabled: false
    # switches it off).
    default_entry: Mapping[str, Any] | None = None
    # The prefix of the job ids of its tasks (reminder:<id>, task:<id>).
    job_id_prefix: str = "task"
    # For a job whose tasks are run by a separate function (your @job functions, whose `func`
    # serves config.yaml's cron entries): run with (context, task id) for a task's job.
    task: JobFunction | None = None
    # What its tasks' arguments are checked against (tasks.arguments.Arguments), and the
    # function itself (so that add_task(func) finds it), for your @job functions.
    arguments: Any = None
    function: Callable[..., Any] | None = None

    def runner_for(self, job_id: str) -> JobFunction:
        """What runs the scheduled job job_id: the task runner for one of its tasks."""
        if self.task is not None and job_id.startswith(f"{self.job_id_prefix}:"):
            return self.task
        return self.func


def registered_job(name: str, *args: Any, **kwargs: Any) -> NoReturn:
    """The callable that every stored job references; RegistryExecutor runs `name` instead.

    Its import path is part of the stored data: never move or rename it.
    """
    raise RuntimeError(f"job '{name}' must be run by the RegistryExecutor")


class JobAdder(Protocol):
    """The scheduler, as the executor uses it: to store a job's next attempt."""

    def add_job(self, *args: Any, **kwargs: Any) -> Any: ...


# APScheduler ships no type hints, so mypy sees BaseExecutor as Any; subclassing it needs the
# ignore. The scheduler only accepts BaseExecutor instances.
class RegistryExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each due job as an asyncio task on the scheduler's loop.

    It counts the running instances of each job itself (BaseExecutor's count is private) and
    sends the scheduler no job events: nothing listens to them.
    """

    def __init__(
        self,
        context: JobContext,
        registry: Mapping[str, RegisteredJob],
        max_concurrent_jobs: int,
        missing: Callable[[str], RegisteredJob] | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        super().__init__()
        self._context = context
        # Told how every run and task attempt ended (the service's metrics).
        self._observer = observer
        self._registry = registry
        # Stands in for a job that stored work names but that is no longer registered (its
        # module was dropped from job_modules): its tasks then fail visibly instead of waiting.
        self._missing = missing
        # At most this many jobs run at once; the others wait there, not as tasks, so that
        # thousands falling due together never flood the event loop that answers the API.
        self._slots: JobSlots[tuple[Coroutine[Any, Any, Any], str], asyncio.Task[Any]] = JobSlots(
            max_concurrent_jobs
        )
        # Work submitted from the job store's thread, moved to _slots on the loop.
        self._queued: deque[tuple[Coroutine[Any, Any, Any], str]] = deque()
        self._start_requested = False
        self._queue_lock = threading.Lock()
        # Running instances of each job; submitted from the job store's thread, ended on the loop.
        self._instances_lock = threading.Lock()
        self._running_ids: Counter[str] = Counter()
        # One-off runs that fell due while the same job was still running, started when it ends.
        self._deferred: dict[str, tuple[Job, list[datetime]]] = {}
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: JobAdder | None = None

    def start(self, scheduler: JobAdder, alias: str) -> None:
        super().start(scheduler, alias)
        # Called by AsyncIOScheduler.start, on its loop.
        self._loop = asyncio.get_running_loop()
        self._jobs = scheduler

    def shutdown(self, wait: bool = True) -> None:
        # Running jobs are left to drain(), which the service awaits with a deadline.
        return None

    @property
    def context(self) -> JobContext:
        return self._context

    def running_job_ids(self) -> set[str]:
        with self._instances_lock:
            return set(self._running_ids)

    async def drain(self, timeout_s: float) -> int:
        """Start nothing more; wait for running jobs up to timeout_s, then cancel the rest.

        Returns how many were cancelled. Jobs that were waiting for a slot do not start: a
        reminder among them stays 'scheduled' and is recovered at the next start.
        """
        self._stopping = True
        self._start_queued()  # what never got to run records that it did not
        return await finish_or_cancel(self._slots.running(), timeout_s)

    async def settle(self, timeout_s: float) -> int:
        """Wait up to timeout_s for the running jobs; how many still run. Unlike drain, nothing
        is cancelled (a delivery done waits for the database to record it, however long) and
        jobs may start again after: a leader stepping down closes its fence first, so that
        those waiting for a slot start nothing."""
        running = self._slots.running()
        if not running:
            return 0
        _, pending = await asyncio.wait(running, timeout=timeout_s)
        return len(pending)

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        with self._instances_lock:
            if self._running_ids[job.id] < job.max_instances:
                self._do_submit_job(job, run_times)
                self._running_ids[job.id] += 1
                return
            if isinstance(job.trigger, DateTrigger):
                # APScheduler removes a one-off job whose submission was refused, which would
                # drop a retry that falls due while the attempt that scheduled it is still
                # recording its outcome. It runs as soon as that attempt ends instead.
                self._deferred[job.id] = (job, run_times)
                return
        skipped = "skipped: the previous run of this job was still running"
        assert self._loop is not None, "executor not started"
        self._loop.call_soon_threadsafe(self._record_missed, job, run_times, skipped)
        raise MaxInstancesReachedError(job)

    def _ended(self, job_id: str) -> None:
        """A run of the job ended: a one-off run deferred meanwhile starts now."""
        with self._instances_lock:
            self._running_ids[job_id] -= 1
            if self._running_ids[job_id] > 0:
                return
            del self._running_ids[job_id]
            deferred = self._deferred.pop(job_id, None)
        if deferred is not None:
            self.submit_job(*deferred)

    def _spawn_threadsafe(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        assert self._loop is not None, "executor not started"
        self._queued.append((work, name))
        with self._queue_lock:
            if self._start_requested:
                return
            self._start_requested = True
        # One wake-up of the loop for everything a pass over the job store submits.
        self._loop.call_soon_threadsafe(self._start_queued)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # BaseExecutor declares this abstract: called by submit_job above only.
        skipped = _coalesced_away(job, run_times)
        # Called from the job store's worker thread: the task is created on the loop.
        self._spawn_threadsafe(self._run(job, run_times, skipped), job.id)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        self._queued.append((work, name))
        self._start_queued()

    def _start_queued(self) -> None:
        assert self._loop is not None
        with self._queue_lock:
            self._start_requested = False
        while self._queued:
            self._slots.wait(self._queued.popleft())
        self._slots.start_waiting(self._start_task, stopping=self._stopping)

    def _start_task(self, queued: tuple[Coroutine[Any, Any, Any], str]) -> asyncio.Task[Any]:
        assert self._loop is not None
        work, name = queued
        context = contextvars.copy_context()
        context.run(_free_slot.set, self._free_current_slot)
        task = self._loop.create_task(work, name=f"job:{name}", context=context)
        task.add_done_callback(self._task_done)
        return task

    def _free_current_slot(self) -> None:
        # Found by the current task rather than bound to it: a task that referred to itself
        # through its own context would wait for the garbage collector to be freed. A task that
        # the job created shares its context but is not one of the slots' jobs.
        task = asyncio.current_task()
        if task is not None and self._slots.give_up(task):
            self._start_queued()

    def waiting(self) -> int:
        """How many submitted jobs wait for a slot to run."""
        return len(self._queued) + self._slots.waiting

    def call_when_waiting_at_most(self, count: int, callback: Callable[[], None]) -> None:
        """Call callback (on the loop, once) as soon as no more than count jobs wait for a
        slot; it replaces a callback asked for earlier."""
        self._slots.call_when_waiting_at_most(count, callback)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._slots.ended(task)
        self._start_queued()

    async def _run(self, job: Job, run_times: list[datetime], skipped: list[datetime]) -> None:
        # Every line logged during the run names its job (and its task: see TaskJob).
        logged_as = start_job(job.args[0])
        try:
            if self._stopping:
                self._record_missed(job, run_times, NOT_STARTED)
                return
            if skipped:
                more = "+" if len(skipped) >= MAX_MISSED_RECORDS else ""
                reason = (
                    f"coalesced: {len(skipped)}{more} overdue runs were replaced by one "
                    f"catch-up run at {run_times[-1]}"
                )
                self._record_missed(job, skipped, reason)
            for run_time in run_times:
                await self._run_once(job, run_time)
        finally:
            self._ended(job.id)
            end_job(logged_as)

    async def _run_once(self, job: Job, run_time: datetime) -> None:
        name, *args = job.args
        now = self._context.clock()
        if job.misfire_grace_time is not None:
            late = now - run_time
            if late > timedelta(seconds=job.misfire_grace_time):
                reason = (
                    f"could only start {late} after its time, past misfire_grace_s="
                    f"{job.misfire_grace_time:g}"
                )
                logger.warning("job %s missed its %s run: %s", job.id, run_time, reason)
                self._record_missed(job, [run_time], reason, now)
                return

        fence = self._context.fence
        if fence.closed:
            # Fired in the moment between losing the lease and pausing: the leader runs it.
            logger.info("job %s: not run at %s, this process no longer leads", job.id, run_time)
            return
        manual = manual_run(job.id)
        if manual is not None:
            # Asked for through a follower (see run_now): its run id was answered already.
            run_id, job_id = manual
            start = runs.RunStart(job_id, name, run_time, now, manual=True, run_id=run_id)
            self._record_later(runs.START_RUNS, start)
            await self._execute(run_id, job_id, name, args, job.kwargs)
            return
        start = runs.RunStart(job.id, name, scheduled_for=run_time, started_at=now)
        lag_s = (now - run_time).total_seconds()
        if isinstance(job.trigger, CronTrigger):
            # A recurring job's tick is claimed first, by a write that fails for a tick run
            # already (by another process) or a lease lost: it runs once, whoever fires it.
            claim = partial(runs.claim_tick, start=start, term=fence.term, fenced=fence.enforced)
            if not await self._context.writer.run(claim):
                logger.warning(
                    "job %s: its %s run is not started here: it ran already, or this process "
                    "no longer leads",
                    job.id,
                    run_time,
                )
                return
        else:
            # Neither the start nor the finish of a run record is waited for: in a burst each
            # wait is a turn of the batch writer, and the writer keeps their order (while the
            # database is away too: see _record_later).
            self._record_later(runs.START_RUNS, start)
        await self._execute(start.run_id, job.id, name, args, job.kwargs, lag_s)

    async def run_now(
        self, job_id: str, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        """Run a job once, outside its schedule; return the id of its run record at once.

        In a process that does not lead, the run is stored as a one-off job for the leader,
        which records it under the id returned here once it starts it.
        """
        assert self._loop is not None, "executor not started"
        if self._context.fence.closed:
            return await asyncio.to_thread(self._store_manual_run, job_id, name, args, kwargs)
        # Counted like a scheduled run: the scheduler will not start the same job meanwhile,
        # so a reminder is never delivered by both at once.
        with self._instances_lock:
            if self._running_ids[job_id]:
                raise Conflict(f"job '{job_id}' is running now; try again when it has finished")
            self._running_ids[job_id] += 1
        try:
            now = self._context.clock()
            start = runs.RunStart(job_id, name, scheduled_for=now, started_at=now, manual=True)
            run_id = await self._context.writer.run_grouped(runs.START_RUNS, start)
        except BaseException:
            self._ended(job_id)
            raise

        async def run() -> None:
            logged_as = start_job(name)
            try:
                if self._stopping:
                    end = RunEnd(run_id, self._context.clock(), RunOutcome.MISSED, NOT_STARTED)
                    self._record_later(runs.FINISH_RUNS, end)
                    label, task = _labelled(job_id, name)
                    self._observer.run(label, RunOutcome.MISSED, task=task)
                    return
                await self._execute(run_id, job_id, name, args, kwargs)
            finally:
                self._ended(job_id)
                end_job(logged_as)

        self._spawn(run(), job_id)
        return run_id

    def _store_manual_run(
        self, job_id: str, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        assert self._jobs is not None, "executor not started"
        run_id = new_id()
        self._jobs.add_job(
            registered_job,
            trigger=DateTrigger(run_date=self._context.clock()),
            args=(name, *args),
            kwargs=dict(kwargs),
            id=f"{MANUAL_RUN_PREFIX}{run_id}:{job_id}",
            name=job_id,
            misfire_grace_time=None,
        )
        return run_id

    async def _execute(
        self,
        run_id: str,
        job_id: str,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        lag_s: float | None = None,
    ) -> None:
        """Call the registered function and complete its run record with the outcome.

        lag_s: how late a scheduled run starts (None for a run asked for), for the observer.
        """
        label, task = _labelled(job_id, name)
        if task:
            # Set in this run's own task context: its TaskJob reports the attempt's outcome.
            _attempt_ended.set(partial(self._observer.attempt, name))
        began = time.monotonic()
        outcome, error, retval = RunOutcome.SUCCESS, None, None
        try:
            entry = self._registry.get(name)
            if entry is None and self._missing is not None:
                entry = self._missing(name)
            if entry is None:
                raise LookupError(f"no job named '{name}' is registered")
            retval = await entry.runner_for(job_id)(self._context, *args, **kwargs)
        except Missed as exc:
            outcome, error = RunOutcome.MISSED, str(exc)
        except Fenced as exc:
            # Nothing ran: the lease was lost before the attempt could start. The leader runs it.
            outcome, error = RunOutcome.ERROR, f"not run: {exc}"
            logger.warning("job %s: %s", job_id, exc)
        except Superseded as exc:
            outcome, error = RunOutcome.ERROR, str(exc)
            logger.warning("job %s (%s): %s", job_id, name, exc)
        except RetryLater as exc:
            outcome, error = RunOutcome.ERROR, str(exc)
            logger.warning("job %s (%s): %s", job_id, name, exc)
            try:
                await asyncio.to_thread(self._schedule_retry, job_id, name, args, kwargs, exc.at)
            except Exception:
                # The database went away again: the reminder is 'scheduled' with its next
                # attempt recorded, and the recovery sweep gives it a job once it is back.
                logger.exception("job %s: its next attempt could not be stored", job_id)
        except Exception as exc:
            logger.exception("job %s (%s) failed", job_id, name)
            outcome, error = RunOutcome.ERROR, f"{type(exc).__name__}: {exc}"
        result = None if retval is None else str(retval)
        end = RunEnd(run_id, self._context.clock(), outcome, error, result)
        self._record_later(runs.FINISH_RUNS, end)
        duration_s = time.monotonic() - began
        self._observer.run(label, outcome, task=task, lag_s=lag_s, duration_s=duration_s)

    def _schedule_retry(
        self,
        job_id: str,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        at: datetime,
    ) -> None:
        # Should this ever lose a race with the pass that removed the job, the reminder is still
        # 'scheduled' without a job, and the recovery sweep schedules it again.
        assert self._jobs is not None, "executor not started"
        self._jobs.add_job(
            registered_job,
            trigger=DateTrigger(run_date=at),
            args=(name, *args),
            kwargs=dict(kwargs),
            id=job_id,
            name=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _record_missed(
        self, job: Job, run_times: list[datetime], reason: str, now: datetime | None = None
    ) -> None:
        """Queue a missed-run record of each run time, like _record_later."""
        name, at = job.args[0], now or self._context.clock()
        missed = partial(
            runs.record_missed,
            job_id=job.id,
            job=name,
            scheduled_times=run_times,
            now=at,
            reason=reason,
        )
        written = self._context.writer.queue(missed, until_written=True)
        written.add_done_callback(partial(_log_failure, "missed runs", job.id))
        manual = manual_run(job.id)
        label, task = _labelled(manual[1] if manual is not None else job.id, name)
        for _ in run_times:
            self._observer.run(label, RunOutcome.MISSED, task=task)

    def _record_later(self, step: Grouped[Item, T], item: Item) -> None:
        """Queue a run record for the writer without waiting; a failure is logged only.

        While the database is away the writer holds it, in order, and writes it once the
        database is back: the record of a run that started before an outage is completed, never
        left 'running' (see BatchWriter).
        """
        written = self._context.writer.queue_grouped(step, item, until_written=True)
        written.add_done_callback(partial(_log_failure, step.name, item))


# The job id of a manual run stored for the leader: run-now:<run id>:<job id>.
MANUAL_RUN_PREFIX = "run-now:"


def _labelled(job_id: str, name: str) -> tuple[str, bool]:
    """How the observer names a run, and whether it is a task's attempt: a task's job id is
    <prefix>:<task id> (engine.scheduler.task_job_id), which no recurring job's id can be
    (cron.entries.ID_PATTERN has no ':'). Tasks are named by their job, every recurring job by
    its own id: a label per task would never end."""
    task = ":" in job_id
    return (name if task else job_id), task


def manual_run(stored_job_id: str) -> tuple[str, str] | None:
    """(run id, job id) of a manual run stored for the leader; None for any other job."""
    if not stored_job_id.startswith(MANUAL_RUN_PREFIX):
        return None
    run_id, _, job_id = stored_job_id.removeprefix(MANUAL_RUN_PREFIX).partition(":")
    return run_id, job_id


async def finish_or_cancel(tasks: set[asyncio.Task[Any]], timeout_s: float) -> int:
    """Wait up to timeout_s for the tasks, then cancel those still running and wait for them
    to unwind; how many were cancelled."""
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return len(pending)


def _log_failure(step: str, item: object, written: asyncio.Future[Any]) -> None:
    if written.cancelled() or written.exception() is None:
        return
    logger.error("could not write the run record (%s) %s", step, item, exc_info=written.exception())


def _coalesced_away(job: Job, run_times: list[datetime]) -> list[datetime]:
    """The overdue run times that coalescing dropped, so that each can be recorded as missed."""
    if not job.coalesce or not run_times:
        return []
    # APScheduler advances next_run_time only after submitting: it still names the first overdue
    # run here.
    skipped: list[datetime] = []
    moment = job.next_run_time
    last = run_times[-1]
    while moment is not None and moment < last and len(skipped) < MAX_MISSED_RECORDS:
        skipped.append(moment)
        moment = job.trigger.get_next_fire_time(moment, last)
    return skipped
