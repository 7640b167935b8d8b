"""What /metrics reads from the database, and the count of database errors.

Gauges that only the database knows (tasks by job and status, the failed queue, each recurring
job's next fire time) are read by one statement, at most every `refresh_s` seconds: a scrape
costs that one statement or none, however often Prometheus (or several of them) scrapes, and
whatever the number of tasks it costs one GROUP BY over the tasks (kept bounded by retention)
and a join of two small tables. Between reads a scrape answers the last values read; a read
that fails (the database is away) keeps the previous values, and is not tried again before
another `refresh_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import (
    CompoundSelect,
    Engine,
    Float,
    Integer,
    String,
    Table,
    event,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.sql.expression import cast as sql_cast

from scheduler_app.db.engine import database_unavailable, describe_unavailable
from scheduler_app.db.models import CronJob, Task, TaskStatus
from scheduler_app.engine.scheduler import JOBS

logger = logging.getLogger(__name__)
# Within the 5 to 15 s of a usual scrape interval: a scrape sees changes at most this late.
DEFAULT_REFRESH_S = 10.0

TASKS = "scheduler_app_tasks"
FAILED_QUEUE = "scheduler_app_failed_queue"
NEXT_FIRE = "scheduler_app_next_fire_timestamp_seconds"
READ_AT = "scheduler_app_database_gauges_timestamp_seconds"
_TASK_ROW = "task"
_JOB_ROW = "job"


@dataclass(frozen=True)
class Snapshot:
    """What one read of the database found."""

    # (job, status) -> how many tasks
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)
    # recurring job id -> its next fire time (seconds since the epoch); paused jobs have none
    next_fire: dict[str, float] = field(default_factory=dict)
    # when it was read (seconds since the epoch)
    read_at: float = 0.0

    @property
    def failed(self) -> int:
        return sum(n for (_, status), n in self.tasks.items() if status == TaskStatus.FAILED)


@lru_cache(maxsize=1)
def _statement() -> CompoundSelect[Any]:
    """Both reads in one statement: one round trip, one transaction's view of both tables."""
    tasks = cast(Table, Task.__table__)
    cron_jobs = cast(Table, CronJob.__table__)
    by_status = select(
        literal(_TASK_ROW).label("kind"),
        tasks.c.job.label("name"),
        tasks.c.status.label("status"),
        func.count().label("n"),
        sql_cast(null(), Float).label("next_run_time"),
    ).group_by(tasks.c.job, tasks.c.status)
    next_fire = (
        select(
            literal(_JOB_ROW),
            cron_jobs.c.id,
            sql_cast(null(), String),
            sql_cast(null(), Integer),
            JOBS.c.next_run_time,
        )
        .join_from(cron_jobs, JOBS, JOBS.c.id == cron_jobs.c.id)
        .where(JOBS.c.next_run_time.is_not(None))
    )
    return union_all(by_status, next_fire)


def read_snapshot(engine: Engine) -> Snapshot:
    """Read the gauges' values: one statement."""
    tasks: dict[tuple[str, str], int] = {}
    next_fire: dict[str, float] = {}
    with engine.connect() as connection:
        for kind, name, status, n, next_run_time in connection.execute(_statement()):
            if kind == _TASK_ROW:
                tasks[(name, status)] = int(n)
            else:
                next_fire[name] = float(next_run_time)
    return Snapshot(tasks, next_fire, time.time())


class DatabaseGauges(Collector):
    """The database's gauges, read at most every refresh_s seconds (see the module)."""

    def __init__(
        self,
        read: Callable[[], Snapshot],
        refresh_s: float = DEFAULT_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._snapshot: Snapshot | None = None
        self._tried_at: float | None = None
        # Scrapes at once wait for one read instead of each making its own.
        self._lock = threading.Lock()

    def current(self) -> Snapshot | None:
        """The values to answer: read again when older than refresh_s; None before any read
        has succeeded."""
        with self._lock:
            now = self._monotonic()
            if self._tried_at is None or now - self._tried_at >= self._refresh_s:
                self._tried_at = now
                try:
                    self._snapshot = self._read()
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    logger.warning(
                        "metrics: the database gauges keep their last values: %s",
                        describe_unavailable(exc),
                    )
            return self._snapshot

    def describe(self) -> Iterable[Metric]:
        # The families without values: registering this collector reads nothing.
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        snapshot = self.current()
        if snapshot is None:
            return []
        return list(_families(snapshot))


def _families(snapshot: Snapshot | None = None) -> Iterator[Metric]:
    tasks = GaugeMetricFamily(
        TASKS, "Tasks (reminders included) by job and status, as stored.", labels=["job", "status"]
    )
    failed = GaugeMetricFamily(
        FAILED_QUEUE, "Tasks (reminders included) in status failed: waiting for an operator."
    )
    next_fire = GaugeMetricFamily(
        NEXT_FIRE,
        "When each recurring job fires next (Unix time); none while paused.",
        labels=["job"],
    )
    read_at = GaugeMetricFamily(READ_AT, "When the database gauges were last read (Unix time).")
    if snapshot is not None:
        jobs = sorted({job for job, _ in snapshot.tasks})
        for job in jobs:
            # Every status of a job that has tasks: a count that falls to 0 reads 0 instead of
            # vanishing.
            for status in TaskStatus:
                tasks.add_metric([job, status.value], snapshot.tasks.get((job, status), 0))
        failed.add_metric([], snapshot.failed)
        for job_id, at in sorted(snapshot.next_fire.items()):
            next_fire.add_metric([job_id], at)
        read_at.add_metric([], snapshot.read_at)
    yield from (tasks, failed, next_fire, read_at)


def count_database_errors(engine: Engine, errors: Counter) -> None:
    """Count on `errors` every statement or connection the database refused for being
    unavailable (down, restarting, locked, connection lost): the errors that the batch writer,
    the recovery sweep, the elector and the API retry or answer 503 for. One listener on the
    engine sees them all, wherever they are caught. A refused statement (a constraint, bad
    SQL) is not counted; nor is the pool's check of an idle connection, whose failure it
    mends by opening a new one."""

    def on_error(context: ExceptionContext) -> None:
        if getattr(context, "is_pre_ping", False):
            return
        error: Any = context.sqlalchemy_exception or context.original_exception
        if context.is_disconnect or database_unavailable(error):
            errors.inc()

    event.listen(engine, "handle_error", on_error)
