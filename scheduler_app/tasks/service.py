"""Tasks of your own jobs: create, show, list, cancel and retry them, over HTTP or from Python.

Each operation owns its transaction and keeps the task's job in step with its row, except
add_task_in and schedule_in, which add the task to the caller's own transaction: the task
exists only if the caller commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from scheduler_app.clock import as_utc
from scheduler_app.db.batch_writer import BatchWriter, Grouped
from scheduler_app.db.models import Task, TaskStatus
from scheduler_app.db.paging import TIME_POSITION, Page, keyset_page, older_than, time_cursor
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.errors import Conflict, InvalidField, NotFound
from scheduler_app.ids import new_id
from scheduler_app.security import hash_token
from scheduler_app.settings import Settings
from scheduler_app.tasks import store
from scheduler_app.tasks.arguments import Arguments, InvalidArguments

JobRef = Callable[..., Any] | str


@dataclass(frozen=True)
class NewTask:
    """A checked request for a task: its row, or the task an Idempotency-Key made before."""

    job: RegisteredJob
    args: dict[str, Any]
    due: datetime
    now: datetime
    key_hash: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Created:
    row: dict[str, Any]
    replayed: bool


def create_all(session: Session, requests: list[NewTask]) -> list[Created]:
    """Store new tasks with their jobs, or find the task stored earlier with the same
    Idempotency-Key (the writer commits); those without a key are written together."""
    created: list[Created] = []
    plain: dict[str, list[dict[str, Any]]] = {}
    for item in requests:
        row = store.new_row(
            new_id(),
            item.job.name,
            item.args,
            item.due,
            item.now,
            idempotency_key_hash=item.key_hash,
            request_fingerprint=item.fingerprint,
        )
        if item.key_hash is None:
            plain.setdefault(item.job.job_id_prefix, []).append(row)
            created.append(Created(row, replayed=False))
            continue
        created.append(_create_keyed(session, item, row))
    for prefix, rows in plain.items():
        store.insert_with_jobs(session, rows, prefix, unless_taken=False)
    return created


def _create_keyed(session: Session, item: NewTask, row: dict[str, Any]) -> Created:
    assert item.key_hash is not None
    existing = _by_key(session, item.key_hash, item.fingerprint)
    if existing is not None:
        return existing
    if store.insert_with_jobs(session, [row], item.job.job_id_prefix, unless_taken=True):
        return Created(row, replayed=False)
    # Another process stored one with this key since the check: its unique index decided.
    winner = _by_key(session, item.key_hash, item.fingerprint)
    if winner is None:
        raise RuntimeError("the Idempotency-Key's task vanished while it was being stored")
    return winner


def _by_key(session: Session, key_hash: str, fingerprint: str | None) -> Created | None:
    task = session.scalar(select(Task).where(Task.idempotency_key_hash == key_hash))
    if task is None:
        return None
    if task.request_fingerprint != fingerprint:
        raise InvalidField(
            ("header", "Idempotency-Key"),
            "was already used for a different request; use a new key for a new task",
        )
    return Created({name: getattr(task, name) for name in store.COLUMNS}, replayed=True)


CREATE_TASKS = Grouped("create tasks", create_all)


def public_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """A task as the API shows it, from its row (column name to value)."""
    return {
        "id": row["id"],
        "job": row["job"],
        "args": json.loads(row["args"]),
        "status": row["status"],
        "run_at": row["run_at"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "finished_at": row["finished_at"],
        "next_attempt_at": row["next_attempt_at"],
    }


def _fields(task: Task) -> dict[str, Any]:
    return public_fields({name: getattr(task, name) for name in store.COLUMNS})


@dataclass(frozen=True)
class Tasks:
    """Tasks of your @job functions: the service behind /tasks and DurableTasks."""

    settings: Settings
    clock: Callable[[], datetime]
    sessions: Callable[..., Session]
    writer: BatchWriter
    registry: Mapping[str, RegisteredJob]
    # The scheduler's side: give a task's job (again), remove it, wake up by a due time.
    schedule_job: Callable[[str, str, datetime], None] = field(repr=False)
    unschedule_job: Callable[[str, str], None] = field(repr=False)
    wake_by: Callable[[datetime], None] = field(repr=False)
    # Whether a session is on this service's database (add_task_in refuses another one).
    same_database: Callable[[Session], bool] = field(repr=False)

    # From Python, as BackgroundTasks.add_task takes them.

    async def add_task(self, func: JobRef, /, *args: Any, **kwargs: Any) -> str:
        """Store a task that runs func(*args, **kwargs) as soon as possible; its id. The task
        is in the database when this returns."""
        return await self._store(self._request(func, args, kwargs, None, None))

    async def schedule(
        self,
        func: JobRef,
        /,
        *args: Any,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Store a task that runs func(*args, **kwargs) at run_at or after delay_seconds."""
        return await self._store(self._request(func, args, kwargs, run_at, delay_seconds))

    def add_task_in(self, session: Session, func: JobRef, /, *args: Any, **kwargs: Any) -> str:
        """Add a task to the caller's own transaction (a Session on this database): it exists
        only if the caller commits, and runs as soon as possible after."""
        return self._add_in(session, self._request(func, args, kwargs, None, None))

    def schedule_in(
        self,
        session: Session,
        func: JobRef,
        /,
        *args: Any,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        **kwargs: Any,
    ) -> str:
        """schedule, inside the caller's own transaction (see add_task_in)."""
        return self._add_in(session, self._request(func, args, kwargs, run_at, delay_seconds))

    # Over HTTP.

    async def create(
        self,
        job: str,
        args: Mapping[str, Any],
        *,
        run_at: datetime | None,
        delay_seconds: float | None,
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """POST /tasks: the task's public fields and whether an Idempotency-Key replayed it."""
        registered = self.registry.get(job)
        arguments = registered.arguments if registered is not None else None
        if registered is None or not isinstance(arguments, Arguments):
            known = ", ".join(sorted(self._task_jobs())) or "none"
            raise InvalidField(
                ("body", "job"), f"no job named {job!r} takes tasks (known: {known})"
            )
        checked = arguments.check(args)
        now = self.clock()
        due = self._due(now, run_at, delay_seconds, location=("body",))
        key_hash = fingerprint = None
        if idempotency_key is not None:
            key_hash = hash_token(f"task\0{idempotency_key}")
            request = {"job": job, "args": checked, "run_at": run_at, "delay": delay_seconds}
            canonical = json.dumps(request, sort_keys=True, default=str)
            fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        item = NewTask(registered, checked, due, now, key_hash, fingerprint)
        created: Created = await self.writer.run_grouped(CREATE_TASKS, item)
        if not created.replayed:
            self.wake_by(due)
        return public_fields(created.row), created.replayed

    def show(self, task_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            return _fields(self._get(session, task_id))

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a scheduled task; again is a no-op; a finished one raises Conflict."""
        with self.sessions() as session:
            task = self._get(session, task_id)
            if task.status != TaskStatus.CANCELLED:
                store.finish(session, task.id, TaskStatus.CANCELLED, self.clock())
                session.commit()
                session.refresh(task)
            if task.status != TaskStatus.CANCELLED:
                raise Conflict(
                    f"task '{task.id}' is already {task.status}; only a scheduled task can be "
                    "cancelled"
                )
            self.unschedule_job(task.job, task.id)
            return _fields(task)

    def retry(self, task_id: str) -> dict[str, Any]:
        """Run a task again now: a failed or missed one with a fresh set of attempts, one waiting
        for its automatic retry without waiting for it."""
        with self.sessions() as session:
            task = self._get(session, task_id)
            now = self.clock()
            if not store.requeue(session, task, now):
                raise Conflict(
                    f"task '{task.id}' is {task.status}; only failed or missed tasks, or those "
                    "waiting for a retry, are retried"
                )
            session.commit()
            session.refresh(task)
            self.schedule_job(task.job, task.id, now)
            return _fields(task)

    def retry_matching(self, *, job: str | None, status: TaskStatus, limit: int) -> list[str]:
        """Run again now every failed or missed task of a job (of every job when None); the ids
        retried, oldest failure first, at most limit."""
        if status not in (TaskStatus.FAILED, TaskStatus.MISSED):
            raise InvalidField(("body", "status"), "only failed or missed tasks are retried")
        jobs = self._task_jobs() if job is None else [job]
        query = (
            select(Task)
            .where(Task.job.in_(jobs), Task.status == status)
            .order_by(Task.finished_at, Task.id)
            .limit(limit)
        )
        with self.sessions() as session:
            now = self.clock()
            retried = [task for task in session.scalars(query) if store.requeue(session, task, now)]
            session.commit()
        for task in retried:
            self.schedule_job(task.job, task.id, now)
        return [task.id for task in retried]

    def page(
        self, *, job: str | None, status: TaskStatus | None, limit: int, cursor: str | None
    ) -> Page[dict[str, Any]]:
        """Tasks of your jobs, most recently changed first."""

        def fetch(before: tuple[datetime, str] | None, count: int) -> list[dict[str, Any]]:
            query = select(Task).where(Task.job.in_(self._task_jobs()))
            if job is not None:
                query = query.where(Task.job == job)
            if status is not None:
                query = query.where(Task.status == status)
            if before is not None:
                query = query.where(older_than(Task.updated_at, Task.id, before))
            query = query.order_by(Task.updated_at.desc(), Task.id.desc()).limit(count)
            with self.sessions() as session:
                return [_fields(task) for task in session.scalars(query)]

        return keyset_page(
            fetch,
            cursor=cursor,
            position=TIME_POSITION,
            limit=limit,
            cursor_after=lambda item: time_cursor(item["updated_at"], item["id"]),
        )

    def _task_jobs(self) -> list[str]:
        return [name for name, registered in self.registry.items() if registered.arguments]

    def _get(self, session: Session, task_id: str) -> Task:
        task = session.get(Task, task_id)
        if task is None or task.job not in self._task_jobs():
            raise NotFound(f"no task with id '{task_id}'")
        return task

    def _registered(self, func: JobRef) -> RegisteredJob:
        if isinstance(func, str):
            registered = self.registry.get(func)
        else:
            registered = next(
                (r for r in self.registry.values() if r.function is func and func is not None),
                None,
            )
        if registered is None or not isinstance(registered.arguments, Arguments):
            name = func if isinstance(func, str) else getattr(func, "__qualname__", repr(func))
            raise ValueError(
                f"{name} is not a registered job: decorate it with @job(...) in a module of "
                "job_modules, or in the module that creates the Scheduler"
            )
        return registered

    def _request(
        self,
        func: JobRef,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        run_at: datetime | None,
        delay_seconds: float | None,
    ) -> NewTask:
        registered = self._registered(func)
        assert isinstance(registered.arguments, Arguments)
        checked = registered.arguments.bind(args, kwargs)
        now = self.clock()
        return NewTask(registered, checked, self._due(now, run_at, delay_seconds, ()), now)

    async def _store(self, item: NewTask) -> str:
        created: Created = await self.writer.run_grouped(CREATE_TASKS, item)
        self.wake_by(item.due)
        return str(created.row["id"])

    def _add_in(self, session: Session, item: NewTask) -> str:
        if not self.same_database(session):
            raise ValueError(
                "add_task_in needs a session on the scheduler's own database (database_url): "
                "a task in another database would never be seen"
            )
        [created] = create_all(session, [item])
        due = item.due
        # Woken once the caller's transaction commits; before, the scheduler could not see it.
        event.listen(session, "after_commit", lambda _session: self.wake_by(due), once=True)
        return str(created.row["id"])

    def _due(
        self,
        now: datetime,
        run_at: datetime | None,
        delay_seconds: float | None,
        location: tuple[str, ...],
    ) -> datetime:
        limit_days = self.settings.tasks.max_delay_days
        if run_at is not None and delay_seconds is not None:
            raise InvalidArguments(
                (*location, "delay_seconds"), "give at most one of delay_seconds or run_at"
            )
        if delay_seconds is not None:
            if not delay_seconds > 0:
                raise InvalidArguments((*location, "delay_seconds"), "must be greater than 0")
            if delay_seconds > limit_days * 86_400:
                raise InvalidArguments(
                    (*location, "delay_seconds"),
                    f"is more than {limit_days} days ahead (tasks.max_delay_days)",
                )
            return now + timedelta(seconds=delay_seconds)
        if run_at is not None:
            if run_at.tzinfo is None:
                raise InvalidArguments((*location, "run_at"), "needs a time zone offset")
            due = as_utc(run_at)
            if due - now > timedelta(days=limit_days):
                raise InvalidArguments(
                    (*location, "run_at"),
                    f"is more than {limit_days} days ahead (tasks.max_delay_days)",
                )
            # A time in the past runs as soon as possible: a caller's clock may be behind.
            return max(due, now)
        return now
