"""The running service: database, mail backend, scheduler and recovery, started and stopped once.

What runs in the background is a service (see `scheduler_app.services`), started and stopped here
through one `Services` group.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

from apscheduler.schedulers.base import STATE_RUNNING
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from scheduler_app.api.rate_limit import RateLimiter
from scheduler_app.audit import AuditLog
from scheduler_app.channels import EMAIL
from scheduler_app.channels.email import MailBackend, build_mail_backend
from scheduler_app.clock import Clock
from scheduler_app.cluster import notify
from scheduler_app.cluster.elector import Elector
from scheduler_app.cluster.fence import Fence
from scheduler_app.cluster.identity import ProcessIdentity
from scheduler_app.cluster.notify import Listener, Notifier, notifications_possible
from scheduler_app.cluster.timing import Timing
from scheduler_app.cron.entries import CronJobSpec, parse_job_specs
from scheduler_app.cron.reconcile import (
    ReconcilePlan,
    ReconcilePreview,
    preview_reconcile,
    reconcile,
)
from scheduler_app.db.batch_writer import BatchWriter
from scheduler_app.db.checkpoint import WalCheckpointer
from scheduler_app.db.engine import (
    SessionFactory,
    create_db_engine,
    create_session_factory,
    describe_url,
)
from scheduler_app.db.migrate import upgrade_database
from scheduler_app.engine import runs
from scheduler_app.engine.executor import JobContext, RegisteredJob, RegistryExecutor
from scheduler_app.engine.scheduler import (
    OffLoopScheduler,
    build_scheduler,
    schedule_task_job,
    stored_job_ids,
    unschedule_task_job,
)
from scheduler_app.engine.services import DuePoll, JobDispatch, RecoverySweep, SchedulerService
from scheduler_app.errors import ConfigError
from scheduler_app.metrics import Metrics
from scheduler_app.registry import missing_job
from scheduler_app.reminders.job import REMINDER_JOB
from scheduler_app.reminders.service import Reminders
from scheduler_app.security import resolve_admin_token, resolve_secret_key
from scheduler_app.services import BackgroundService, ClosedOnStop, Services, WorkerThread
from scheduler_app.settings import Settings, load_settings
from scheduler_app.tasks import recovery
from scheduler_app.tasks.service import Tasks

logger = logging.getLogger(__name__)
T = TypeVar("T")
DASHBOARD_LOGINS_PER_MINUTE = 10


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    registry: Mapping[str, RegisteredJob]
    engine: Engine
    sessions: SessionFactory
    mail: MailBackend
    admin_token: str
    secret_key: bytes
    executor: RegistryExecutor
    scheduler: OffLoopScheduler
    # This service's own Prometheus registry and what feeds it (GET /metrics).
    metrics: Metrics
    audit: AuditLog = field(init=False, repr=False)
    reminders: Reminders = field(init=False, repr=False)
    tasks: Tasks = field(init=False, repr=False)
    subscribe_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0))
    # Dashboard logins a minute per client address: guessing the admin token stays slow.
    dashboard_login_limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(DASHBOARD_LOGINS_PER_MINUTE)
    )
    services: Services = field(default_factory=Services, repr=False)
    fence: Fence = field(default_factory=Fence, repr=False)
    me: ProcessIdentity = field(default_factory=ProcessIdentity.of_this_process)
    elector: Elector = field(init=False, repr=False)
    notifier: Notifier = field(init=False, repr=False)
    _specs: list[CronJobSpec] = field(default_factory=list, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _sighup: bool = field(default=False, repr=False)
    _background: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _loop_reader: Connection | None = field(default=None, repr=False)

    @classmethod
    async def start(
        cls, settings: Settings, clock: Clock, registry: Mapping[str, RegisteredJob]
    ) -> Runtime:
        """Migrate, start the scheduler, recover lost reminders, apply the config's cron jobs.

        Args:
            settings: the service's settings.
            clock: the time source for every decision about "now".
            registry: the job functions that stored jobs may name.
        """
        specs = job_specs(settings, registry)  # a bad jobs list stops start-up before any change
        engine = create_db_engine(settings.database_url)
        # Before the first connection, which would otherwise checkpoint on its commits.
        checkpointer = WalCheckpointer.attach(engine)
        # Before the first statement: the database's errors count from the start.
        metrics = Metrics(engine, settings.metrics.refresh_s)
        metrics.declare(registry, (spec.id for spec in specs))
        await asyncio.to_thread(upgrade_database, engine)
        sessions = create_session_factory(engine)
        mail = build_mail_backend(settings.mail)
        writer = BatchWriter(sessions)
        fence = Fence()
        context = JobContext(
            settings=settings,
            sessions=sessions,
            channels={EMAIL: mail},
            clock=clock,
            writer=writer,
            fence=fence,
        )
        executor = RegistryExecutor(
            context,
            registry,
            settings.scheduler.max_concurrent_jobs,
            missing=missing_job,
            observer=metrics,
        )
        runtime = cls(
            settings=settings,
            clock=clock,
            registry=registry,
            engine=engine,
            sessions=sessions,
            mail=mail,
            admin_token=await asyncio.to_thread(resolve_admin_token, settings, engine),
            secret_key=await asyncio.to_thread(resolve_secret_key, settings, engine),
            executor=executor,
            scheduler=build_scheduler(settings, engine, executor),
            metrics=metrics,
            subscribe_limiter=RateLimiter(settings.reminders.per_client_per_minute),
            fence=fence,
            _specs=specs,
            _loop=asyncio.get_running_loop(),
        )
        runtime.notifier = Notifier(
            engine, notifications_possible(engine, settings.scheduler.poll_only)
        )
        runtime.elector = Elector(
            engine=engine,
            me=runtime.me,
            fence=fence,
            timing=Timing(settings.scheduler.lease_s),
            eligible=settings.scheduler.enabled,
            on_elected=runtime._lead,
            on_deposed=runtime.services_stop_leader,
            announce=runtime.notifier.send,
        )
        metrics.follow_leadership(lambda: runtime.elector.leading)
        runtime.audit = AuditLog(sessions, clock)
        runtime.reminders = Reminders(
            settings=settings,
            clock=clock,
            sessions=sessions,
            writer=writer,
            admin_token=runtime.admin_token,
            secret_key=runtime.secret_key,
            schedule=partial(runtime.schedule_task, REMINDER_JOB),
            unschedule=partial(runtime.unschedule_task, REMINDER_JOB),
            wake_by=runtime.wake_by,
        )
        runtime.tasks = Tasks(
            settings=settings,
            clock=clock,
            sessions=sessions,
            writer=writer,
            registry=registry,
            schedule_job=runtime.schedule_task,
            unschedule_job=runtime.unschedule_task,
            wake_by=runtime.wake_by,
            same_database=runtime.same_database,
        )
        runtime.services = Services(runtime._background_services(checkpointer))
        try:
            await runtime.services.start()
            # Leads at once if nobody else does; otherwise follows, and takes over when the
            # leader goes.
            await runtime.elector.start()
        except BaseException:
            await runtime.services.stop()
            raise
        runtime._listen_for_sighup()
        logger.info(
            "scheduler-app started: database %s, mail backend %s, %s (process %s), %d cron job(s)",
            describe_url(settings.database_url),
            mail.name,
            runtime.role if settings.scheduler.enabled else "follower (scheduler.enabled: false)",
            runtime.me.id,
            len(specs),
        )
        return runtime

    @property
    def role(self) -> str:
        """ "leader" while this process runs the scheduler, else "follower"."""
        return "leader" if self.elector.leading else "follower"

    async def _lead(self) -> None:
        """Become the leader: bring the cron jobs in line with this process's configuration,
        catch up with what the previous leader left, and let the scheduler run jobs."""
        await self.apply_job_specs(self._specs)
        await self.services.start_leader()

    async def services_stop_leader(self) -> list[str]:
        return await self.services.stop_leader()

    def wake_by(self, due: datetime) -> None:
        """Make sure the job stored for due runs on time: this process's scheduler wakes up
        for it if it leads; otherwise the leader is notified (when due before its next poll).
        Callable from any thread."""
        if self.elector.leading:
            self.scheduler.wake_by(due)
            return
        horizon = self.settings.scheduler.poll_interval_s
        if (due - self.clock()).total_seconds() > horizon or self._loop is None:
            return
        self.notifier.send_threadsafe(self._loop, notify.DUE)

    def wake_leader(self) -> None:
        """A job was changed here (resumed, run now): the leader looks at the store now."""
        if self.elector.leading:
            self.scheduler.wakeup()
        elif self._loop is not None:
            self.notifier.send_threadsafe(self._loop, notify.DUE)

    async def stop(self) -> None:
        """Stop taking work, let running jobs finish up to the shutdown timeout, close the DB.

        What reads the database in a worker thread (a recovery pass, a pass over the job store)
        is let finish first, each up to the same timeout: a connection out of the pool when the
        engine is disposed of would stay open.
        """
        timeout_s = self.settings.scheduler.shutdown_timeout_s
        self._stop_listening_for_sighup()
        # First: a leader hands over (its jobs finished, the lease given up) while the rest
        # still runs.
        await self.elector.stop()
        await self.notifier.close()
        await self.services.stop()
        if self._loop_reader is not None:
            self._loop_reader.close()
        if not await _connections_returned(self.engine, timeout_s):
            logger.warning("a database connection was still in use after %ss", timeout_s)
        # Disposing closes the connections in the pool only. One that comes back later (from a
        # worker thread that outlived the wait above) or that is opened after is closed on its
        # return, instead of staying open in a pool that nobody uses any more.
        event.listen(self.engine, "checkin", _close_connection)
        self.engine.dispose()
        logger.info("scheduler-app stopped")

    @property
    def writer(self) -> BatchWriter:
        return self.executor.context.writer

    @property
    def scheduler_running(self) -> bool:
        return bool(self.scheduler.state == STATE_RUNNING)

    def same_database(self, session: Session) -> bool:
        """Whether a session (the caller's own) is on this service's database."""
        bind = session.get_bind()
        url = bind.engine.url if isinstance(bind, Connection) else bind.url
        return url.render_as_string(hide_password=False) == self.engine.url.render_as_string(
            hide_password=False
        )

    def job_id_prefix(self, job: str) -> str:
        entry = self.registry.get(job)
        return entry.job_id_prefix if entry is not None else "task"

    def schedule_task(self, job: str, task_id: str, due: datetime) -> None:
        schedule_task_job(self.scheduler, job, self.job_id_prefix(job), task_id, due)

    def unschedule_task(self, job: str, task_id: str) -> None:
        unschedule_task_job(self.scheduler, self.job_id_prefix(job), task_id)

    async def recover(self) -> int:
        # Two passes ahead: a task whose job is lost is recovered before it falls due.
        horizon = self.clock() + timedelta(seconds=2 * self.settings.scheduler.recovery_interval_s)
        return await recovery.recover_tasks(
            self.sessions,
            self.job_id_prefix,
            partial(stored_job_ids, self.engine),
            self.executor.running_job_ids,
            self.schedule_task,
            horizon,
        )

    async def _catch_up(self) -> None:
        """What a crash left behind: runs recorded as under way are closed, interrupted tasks
        scheduled again, lost jobs given back."""
        await asyncio.to_thread(self.in_session, runs.close_interrupted_runs, self.clock())
        # Attempts of this process's previous term that still record their outcome (the
        # database was away) are its own, not interrupted.
        running_here = {job_id.partition(":")[2] for job_id in self.executor.running_job_ids()}
        await asyncio.to_thread(
            self.in_session, recovery.reset_interrupted, self.clock(), running_here
        )
        await self.recover()

    def _background_services(self, checkpointer: WalCheckpointer | None) -> list[BackgroundService]:
        """Every background service, in the order they start; they stop in the reverse order.

        The scheduler's jobs write through the batch writer, and the writer's commits leave
        checkpoints to the checkpointer: each stops after what uses it.
        """
        timeout_s = self.settings.scheduler.shutdown_timeout_s
        services: list[BackgroundService] = [
            ClosedOnStop(f"mail ({self.mail.name})", self.mail.close)
        ]
        if checkpointer is not None:
            services.append(WorkerThread("WAL checkpointer", checkpointer))
        services += [
            WorkerThread("batch writer", self.writer),
            SchedulerService(self.scheduler, self.executor, timeout_s),
        ]
        if self.notifier.enabled:
            handlers = {notify.DUE: self._notified_due, notify.LEASE: self.elector.wake}
            services.append(Listener(self.engine, handlers))
        services += [
            JobDispatch(self.scheduler, self.executor, self._catch_up, timeout_s),
            DuePoll(self.scheduler.poll, self.settings.scheduler.poll_interval_s),
            RecoverySweep(
                self.recover,
                self.scheduler.wakeup,
                self.settings.scheduler.recovery_interval_s,
                timeout_s,
            ),
        ]
        return services

    def _notified_due(self) -> None:
        if self.elector.leading:
            self.scheduler.poll()

    def in_session(self, work: Callable[..., T], *args: Any) -> T:
        """work(session, *args) in a session of its own (blocking: call it in a worker thread)."""
        with self.sessions() as session:
            return work(session, *args)

    async def read(self, work: Callable[[Session], T], *, indexed: bool) -> T:
        """work(session) for a request that only reads.

        On SQLite, a read that follows an index (a few milliseconds) runs on the event loop, on
        a connection kept for it. In a worker thread, SQLite's driver gives up the interpreter
        lock for every row and then waits for a busy event loop to hand it back: during a storm
        of deliveries a page of 50 jobs took 17 to 32 ms there for 4 to 8 ms of work. A WAL
        reader never waits for a writer, and the kept connection never waits for the pool.
        Anything else (a search that may scan every row, or PostgreSQL, where a network round
        trip could stall) runs in a worker thread.
        """
        if not indexed or self.engine.dialect.name != "sqlite":
            return await asyncio.to_thread(self.in_session, work)
        if self._loop_reader is None:
            self._loop_reader = self.engine.connect()
        with self.sessions(bind=self._loop_reader) as session:
            return work(session)

    async def apply_job_specs(self, specs: Sequence[CronJobSpec]) -> ReconcilePlan:
        plan = await asyncio.to_thread(
            self.in_session, reconcile, self.scheduler, specs, self.clock()
        )
        changes = {key: ids for key, ids in plan.summary().items() if ids and key != "unchanged"}
        if changes:
            logger.info("cron jobs reconciled with the configuration: %s", changes)
        return plan

    async def reload(self) -> ReconcilePlan:
        """Read the configuration file again and apply its jobs; ConfigError leaves all as is.

        Applied here, once, to the job store that every process shares; this process's jobs
        list is what it applies again should it become the leader later.
        """
        async with self._reload_lock:
            fresh = await asyncio.to_thread(load_settings, self.settings.config_file)
            specs = job_specs(fresh, self.registry)
            plan = await self.apply_job_specs(specs)
            self._specs = specs
            self.metrics.declare(self.registry, (spec.id for spec in specs))
            self.wake_leader()
            return plan

    async def preview_reload(self) -> ReconcilePreview:
        """What reload would apply now, applying nothing; ConfigError when the file is invalid."""
        fresh = await asyncio.to_thread(load_settings, self.settings.config_file)
        specs = job_specs(fresh, self.registry)
        return await asyncio.to_thread(self.in_session, preview_reconcile, specs)

    def _listen_for_sighup(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (RuntimeError, ValueError, NotImplementedError):
            return  # not the main thread (an embedding test client) or no SIGHUP on this OS
        self._sighup = True

    def _stop_listening_for_sighup(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self._reload_logged(), name="config-reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_logged(self) -> None:
        try:
            plan = await self.reload()
        except ConfigError as exc:
            logger.error(
                "SIGHUP: configuration refused, the running schedule is unchanged:\n%s", exc.message
            )
        else:
            logger.info("SIGHUP: configuration reloaded: %s", plan.summary())


async def _connections_returned(engine: Engine, timeout_s: float) -> bool:
    """Wait up to timeout_s until no connection is out of the pool; whether none is.

    Disposing of the engine closes only the connections in the pool: one that a worker thread
    still holds (a readiness check that timed out, a cancelled job's query) would stay open.
    """
    pool = cast(QueuePool, engine.pool)
    deadline = time.monotonic() + timeout_s
    while pool.checkedout() > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _close_connection(dbapi_connection: Any, _record: Any) -> None:
    if dbapi_connection is not None:
        dbapi_connection.close()


def job_specs(settings: Settings, registry: Mapping[str, RegisteredJob]) -> list[CronJobSpec]:
    """The validated cron jobs of these settings, or ConfigError listing every problem."""
    return parse_job_specs(
        settings.jobs,
        source=str(settings.config_file or "configuration"),
        default_timezone=settings.timezone,
        registry=registry,
    )
