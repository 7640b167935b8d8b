"""Reminder service: accept, authorize, cancel, list and retry one-off reminder e-mails.

A reminder is a task of the deliver_reminder job (tasks/), its e-mail fields the task's
arguments; this module keeps the reminders' own rules and their public view (a task that
succeeded reads "sent", one being attempted "scheduled").
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    String,
    bindparam,
    column,
    func,
    select,
)
from sqlalchemy.orm import Session

from scheduler_app.api.schemas import ReminderCreate
from scheduler_app.clock import as_utc
from scheduler_app.db.batch_writer import BatchWriter, Grouped
from scheduler_app.db.models import OPEN_STATUSES, Task, TaskStatus
from scheduler_app.db.paging import TIME_POSITION, Page, keyset_page, older_than, time_cursor
from scheduler_app.errors import Conflict, Forbidden, InvalidField, NotFound, TooManyRequests
from scheduler_app.ids import new_id
from scheduler_app.reminders.job import REMINDER_JOB, REMINDER_JOB_PREFIX
from scheduler_app.security import hash_token
from scheduler_app.settings import ReminderSettings, Settings
from scheduler_app.tasks import store


class ReminderStatus(enum.StrEnum):
    """A reminder's status as its API shows it."""

    SCHEDULED = "scheduled"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"


# How each task status reads as a reminder's, and the task statuses behind each.
PUBLIC_STATUS: Mapping[str, ReminderStatus] = {
    TaskStatus.SCHEDULED: ReminderStatus.SCHEDULED,
    TaskStatus.RUNNING: ReminderStatus.SCHEDULED,
    TaskStatus.SUCCEEDED: ReminderStatus.SENT,
    TaskStatus.FAILED: ReminderStatus.FAILED,
    TaskStatus.CANCELLED: ReminderStatus.CANCELLED,
    TaskStatus.MISSED: ReminderStatus.MISSED,
}
TASK_STATUSES: Mapping[ReminderStatus, tuple[TaskStatus, ...]] = {
    public: tuple(TaskStatus(task) for task, shown in PUBLIC_STATUS.items() if shown == public)
    for public in ReminderStatus
}


def public_fields(
    row: Mapping[str, Any], args: Mapping[str, Any] | None = None, *, updated: bool = False
) -> dict[str, Any]:
    """A reminder as its API shows it, from its task's row (column name to value); with
    updated, also when it last changed (the position of a page of reminders)."""
    if args is None:
        args = json.loads(row["args"])
    status = PUBLIC_STATUS[row["status"]]
    return {
        "id": row["id"],
        "email": args["email"],
        "subject": args["subject"],
        "remind_at": row["run_at"],
        "status": status,
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "sent_at": row["finished_at"] if status == ReminderStatus.SENT else None,
        "finished_at": row["finished_at"],
        "next_attempt_at": row["next_attempt_at"],
        **({"updated_at": row["updated_at"]} if updated else {}),
    }


def task_fields(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in store.COLUMNS}


@dataclass(frozen=True)
class Subscription:
    """A stored reminder: its row (column name to value), the cancel token, whether replayed.

    A row rather than an ORM object: building and reading one per new reminder took about a
    quarter of the database writer's CPU time per reminder.
    """

    row: dict[str, Any]
    cancel_token: str
    replayed: bool
    # The reminder's e-mail fields (the task's arguments), when the caller has them at hand.
    args: dict[str, Any] | None = None

    @property
    def reminder_id(self) -> str:
        return str(self.row["id"])

    def public(self) -> dict[str, Any]:
        return public_fields(self.row, self.args)


def _cancel_token(reminder_id: str, idempotency_key: str | None, secret_key: bytes) -> str:
    if idempotency_key is None:
        return secrets.token_urlsafe(32)
    # With an Idempotency-Key the token must be reproducible for the replay, yet only its hash is
    # stored: derive it from the key and the reminder, signed with the service's secret key, so
    # that knowing the key and the reminder's id is not enough to compute it.
    if not secret_key:
        raise ValueError("a cancel token for an Idempotency-Key needs the secret key")
    message = f"cancel-token\0{reminder_id}\0{idempotency_key}".encode()
    return hmac.new(secret_key, message, "sha256").hexdigest()


def _legacy_cancel_token(reminder_id: str, idempotency_key: str) -> str:
    # How tokens of reminders created before the secret key was used were derived: a replay of
    # one of those (within retention.idempotency_key_hours of the upgrade) still gets its token.
    digest = hmac.new(idempotency_key.encode(), f"cancel:{reminder_id}".encode(), "sha256")
    return digest.hexdigest()


def _fingerprint(request: ReminderCreate) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_due_time(request: ReminderCreate, now: datetime, limits: ReminderSettings) -> datetime:
    """Return the UTC due time, or raise InvalidField naming the offending field."""
    if (request.delay_seconds is None) == (request.remind_at is None):
        field = "delay_seconds" if request.delay_seconds is not None else "remind_at"
        raise InvalidField(("body", field), "give exactly one of delay_seconds or remind_at")
    if request.delay_seconds is not None:
        field = "delay_seconds"
        try:
            due = now + timedelta(seconds=request.delay_seconds)
        except OverflowError:
            due = datetime.max.replace(tzinfo=now.tzinfo)
    else:
        assert request.remind_at is not None
        field = "remind_at"
        due = as_utc(request.remind_at)  # schemas.Moment: always convertible
        if due < now:
            raise InvalidField(("body", field), "is in the past")
    if due - now > timedelta(days=limits.max_delay_days):
        raise InvalidField(
            ("body", field), f"is more than {limits.max_delay_days} days ahead (the limit)"
        )
    return due


@dataclass(frozen=True)
class SubscribeRequest:
    """A validated POST /subscribe: `due` is the due time, or the error resolve_due_time raised
    (a replay is answered even when the original request's time has passed since)."""

    request: ReminderCreate
    now: datetime
    due: datetime | InvalidField
    limits: ReminderSettings
    idempotency_key: str | None = None
    # Signs the cancel token of a request with an Idempotency-Key (security.resolve_secret_key).
    secret_key: bytes = field(default=b"", repr=False)


def subscribe_all(session: Session, requests: list[SubscribeRequest]) -> list[Subscription]:
    """Store new scheduled reminders with their jobs, or return the reminder created earlier with
    the same Idempotency-Key (the caller commits). Those without a key take two statements for
    the lot; one with a key is checked and written on its own.

    Requests are written one batch at a time by one writer: a concurrent request with the same
    key is seen by the replay check. Another process can store one between the check and the
    insert: the key's unique index decides, and the other request answers with its reminder.
    """
    subscriptions: list[Subscription] = []
    new_rows: list[dict[str, Any]] = []
    pending = _PendingByAddress(session, requests)
    for item in requests:
        if item.idempotency_key is not None:
            subscriptions.append(_subscribe_keyed(session, item, item.idempotency_key, pending))
            continue
        row, token, args = _new_row(item, pending)
        new_rows.append(row)
        subscriptions.append(Subscription(row, token, replayed=False, args=args))
    _insert(session, new_rows)
    return subscriptions


class _PendingByAddress:
    """Scheduled reminders per recipient, read once for a batch's addresses, counted on as the
    batch adds its own; refuses one past `reminders.max_pending_per_address`."""

    def __init__(self, session: Session, requests: list[SubscribeRequest]) -> None:
        self._counts: dict[str, tuple[int, datetime]] = {}
        limited = {
            item.request.email.lower() for item in requests if item.limits.max_pending_per_address
        }
        if limited:
            statement, listed = _pending_listed(session.connection().dialect.name, limited)
            # On the session's connection: the ORM's handling of a select costs more than the
            # database's answer.
            rows = session.connection().execute(statement, listed)
            self._counts = {row.address: (row.pending, as_utc(row.earliest)) for row in rows}

    def add(self, email: str, due: datetime, now: datetime, limit: int) -> None:
        if not limit:
            return
        address = email.lower()
        pending, earliest = self._counts.get(address, (0, due))
        if pending >= limit:
            raise TooManyRequests(
                f"{pending} reminders are already scheduled for this address, the most allowed; "
                "try again once one of them is sent or cancelled",
                retry_after_s=(earliest - now).total_seconds(),
            )
        self._counts[address] = (pending + 1, min(earliest, due))


def _pending_listed(
    dialect: str, addresses: set[str]
) -> tuple[Select[str, int, datetime], dict[str, Any]]:
    """The query that counts the scheduled reminders of each listed address, and the parameters
    that list them.

    The addresses are joined as rows of (address, 'scheduled'), the status included, so that no
    plan can start from the status index: as `lower(email) IN (...) AND status = 'scheduled'`,
    SQLite and PostgreSQL (before it has statistics) read every scheduled reminder for each
    batch of new ones: 7 ms on SQLite and 15 ms on PostgreSQL with 20,000 pending, which cut
    POST /subscribe's rate by a third. Joined, each address is looked up in the index on
    (lower(email), status): 0.01 ms.
    """
    # Each address twice, once per open status: scheduled, or in an attempt now.
    pairs = [(address, status.value) for address in sorted(addresses) for status in OPEN_STATUSES]
    if dialect == "postgresql":
        ordered, statuses = [a for a, _ in pairs], [s for _, s in pairs]
        return _PENDING_UNNESTED, {"addresses": ordered, "statuses": statuses}
    # As a JSON array of [address, status] pairs: an object would keep one status per address.
    return _PENDING_JSON_EACH, {"listed": json.dumps(pairs)}


def _pending_joined(
    address: ColumnElement[str], status: ColumnElement[str], listed: Any
) -> Select[str, int, datetime]:
    return (
        select(
            address.label("address"),
            func.count().label("pending"),
            func.min(Task.run_at).label("earliest"),
        )
        .select_from(listed)
        # Only reminders have a recipient: no condition on the job, which would let a planner
        # without statistics (right after a burst was posted) scan every task for each batch
        # instead of looking each address up in the index (measured: 24 ms against 0.1 ms).
        .join(Task, (func.lower(Task.recipient) == address) & (Task.status == status))
        .group_by(address)
    )


_ADDRESSES_UNNESTED = (
    func.unnest(
        bindparam("addresses", type_=ARRAY(String)), bindparam("statuses", type_=ARRAY(String))
    )
    .table_valued(column("address", String), column("status", String))
    .render_derived()
)
_PENDING_UNNESTED = _pending_joined(
    _ADDRESSES_UNNESTED.c.address, _ADDRESSES_UNNESTED.c.status, _ADDRESSES_UNNESTED
)
_ADDRESSES_JSON_EACH = func.json_each(bindparam("listed", type_=String)).table_valued(
    column("value", String)
)
_PAIR_ADDRESS = func.json_extract(_ADDRESSES_JSON_EACH.c.value, "$[0]")
_PAIR_STATUS = func.json_extract(_ADDRESSES_JSON_EACH.c.value, "$[1]")
_PENDING_JSON_EACH = _pending_joined(_PAIR_ADDRESS, _PAIR_STATUS, _ADDRESSES_JSON_EACH)


def _subscribe_keyed(
    session: Session, item: SubscribeRequest, key: str, pending: _PendingByAddress
) -> Subscription:
    """The reminder stored with this Idempotency-Key, or a new one stored at once, so that a
    later request of the same batch with the same key finds it."""
    # Only a request with an Idempotency-Key can be replayed, so only it needs a fingerprint.
    key_hash, fingerprint = hash_token(key), _fingerprint(item.request)
    existing = _replay(session, key_hash, fingerprint, key, item.secret_key)
    if existing is not None:
        return existing
    row, token, args = _new_row(item, pending, key_hash, fingerprint)
    if _insert(session, [row], keyed=True):
        return Subscription(row, token, replayed=False, args=args)
    # Another process stored it since the check: its insert committed while this one waited on
    # the key's unique index, so reading again finds it.
    winner = _replay(session, key_hash, fingerprint, key, item.secret_key)
    if winner is None:
        raise RuntimeError("the Idempotency-Key's reminder vanished while it was being stored")
    return winner


def _new_row(
    item: SubscribeRequest,
    pending: _PendingByAddress,
    key_hash: str | None = None,
    fingerprint: str | None = None,
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A new reminder's task row, its cancel token and its e-mail fields."""
    if isinstance(item.due, InvalidField):
        raise item.due
    pending.add(item.request.email, item.due, item.now, item.limits.max_pending_per_address)
    reminder_id = new_id()
    token = _cancel_token(reminder_id, item.idempotency_key, item.secret_key)
    args = {
        "email": item.request.email,
        "subject": item.request.subject or item.limits.default_subject,
        "message": item.request.message or "",
    }
    row = store.new_row(
        reminder_id,
        REMINDER_JOB,
        args,
        item.due,
        item.now,
        recipient=item.request.email,
        cancel_token_hash=hash_token(token),
        idempotency_key_hash=key_hash,
        request_fingerprint=fingerprint,
    )
    return row, token, args


def _insert(session: Session, new_rows: list[dict[str, Any]], *, keyed: bool = False) -> bool:
    return store.insert_with_jobs(session, new_rows, REMINDER_JOB_PREFIX, unless_taken=keyed)


SUBSCRIBE = Grouped("subscribe", subscribe_all)


def _replay(
    session: Session, key_hash: str, fingerprint: str, idempotency_key: str, secret_key: bytes
) -> Subscription | None:
    task = session.scalar(select(Task).where(Task.idempotency_key_hash == key_hash))
    if task is None:
        return None
    if task.request_fingerprint != fingerprint:
        raise InvalidField(
            ("header", "Idempotency-Key"),
            "was already used for a different request; use a new key for a new reminder",
        )
    token = _cancel_token(task.id, idempotency_key, secret_key)
    legacy = _legacy_cancel_token(task.id, idempotency_key)
    if task.cancel_token_hash == hash_token(legacy):
        token = legacy
    return Subscription(task_fields(task), token, replayed=True)


def get_reminder(session: Session, reminder_id: str) -> Task:
    task = session.get(Task, reminder_id)
    if task is None or task.job != REMINDER_JOB:
        raise NotFound(f"no reminder with id '{reminder_id}'")
    return task


def authorize(
    reminder: Task, token: str, admin_token: str, *, now: datetime, token_ttl: timedelta
) -> bool:
    """Allow the admin token (True), or the reminder's own cancel token until token_ttl after
    it ended (False)."""
    token_hash = hash_token(token)
    if hmac.compare_digest(token_hash, hash_token(admin_token)):
        return True
    own = reminder.cancel_token_hash is not None and hmac.compare_digest(
        token_hash, reminder.cancel_token_hash
    )
    if not own:
        raise Forbidden("this token does not grant access to this reminder")
    if reminder.finished_at is not None and now > reminder.finished_at + token_ttl:
        raise Forbidden(f"this cancel token expired {token_ttl.days} days after the reminder ended")
    return False


# "SMTPConnectError: Error connecting to mail.internal on port 587 ..." -> "SMTPConnectError".
_ERROR_DETAIL = re.compile(
    r"\b([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Refused|Disconnected|NotSupported)): [^;]*"
)


def public_error(error: str | None) -> str | None:
    """last_error as a cancel-token holder sees it: what failed and why in general terms,
    without the operator's detail (mail server host and port, its replies)."""
    return None if error is None else _ERROR_DETAIL.sub(r"\1", error)


def cancel(session: Session, reminder: Task, now: datetime) -> None:
    """Cancel a scheduled reminder; again is a no-op; a finished one raises Conflict."""
    if reminder.status != TaskStatus.CANCELLED:
        store.finish(session, reminder.id, TaskStatus.CANCELLED, now)
        session.commit()
        session.refresh(reminder)
    if reminder.status != TaskStatus.CANCELLED:
        raise Conflict(
            f"reminder '{reminder.id}' is already {PUBLIC_STATUS[reminder.status]}; "
            "only a scheduled reminder can be cancelled"
        )


def requeue(session: Session, reminder: Task, now: datetime) -> None:
    """Deliver a reminder again now: a failed or missed one with a fresh set of attempts, one
    waiting for its automatic retry without waiting."""
    if not store.requeue(session, reminder, now):
        raise Conflict(
            f"reminder '{reminder.id}' is {PUBLIC_STATUS[reminder.status]}; only failed or "
            "missed ones, or those waiting for a retry, are retried"
        )
    session.commit()
    session.refresh(reminder)
    session.refresh(reminder)


def find_reminders(
    session: Session,
    *,
    status: ReminderStatus | None,
    email: str | None = None,
    error_contains: str | None = None,
    finished_after: datetime | None = None,
    finished_before: datetime | None = None,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Task]:
    """Reminders matching the filters, most recently changed first."""
    query = select(Task).where(Task.job == REMINDER_JOB)
    if status is not None:
        query = query.where(Task.status.in_(TASK_STATUSES[status]))
    if email is not None:
        query = query.where(Task.recipient == email)
    if error_contains:
        query = query.where(Task.last_error.icontains(error_contains, autoescape=True))
    if finished_after is not None:
        query = query.where(Task.finished_at >= finished_after)
    if finished_before is not None:
        query = query.where(Task.finished_at < finished_before)
    if before is not None:
        query = query.where(older_than(Task.updated_at, Task.id, before))
    query = query.order_by(Task.updated_at.desc(), Task.id.desc()).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Reminders:
    """The reminder operations the API offers, each one call that owns its transaction and
    keeps the reminder's job in step with its row."""

    settings: Settings
    clock: Callable[[], datetime]
    sessions: Callable[[], Session]
    writer: BatchWriter
    admin_token: str = field(repr=False)
    secret_key: bytes = field(repr=False)
    # The scheduler's side: give a reminder's job (again), remove it, wake up by a due time.
    schedule: Callable[[str, datetime], None]
    unschedule: Callable[[str], None]
    wake_by: Callable[[datetime], None]

    async def subscribe(self, body: ReminderCreate, idempotency_key: str | None) -> Subscription:
        """Store a reminder with its job (or find the one this Idempotency-Key made)."""
        now = self.clock()
        limits: ReminderSettings = self.settings.reminders
        try:
            due: datetime | InvalidField = resolve_due_time(body, now, limits)
        except InvalidField as problem:
            if idempotency_key is None:
                raise
            due = problem  # unless the key replays an earlier request
        # Written with the requests and attempts of the same moment in one transaction.
        item = SubscribeRequest(body, now, due, limits, idempotency_key, self.secret_key)
        subscription: Subscription = await self.writer.run_grouped(SUBSCRIBE, item)
        if not subscription.replayed:
            self.wake_by(subscription.row["run_at"])
        return subscription

    def show(self, reminder_id: str, token: str) -> tuple[dict[str, Any], bool]:
        """The reminder's public fields, and whether the token was the admin token."""
        with self.sessions() as session:
            reminder = get_reminder(session, reminder_id)
            return public_fields(task_fields(reminder)), self._authorize(reminder, token)

    def cancel(self, reminder_id: str, token: str) -> tuple[dict[str, Any], bool]:
        with self.sessions() as session:
            reminder = get_reminder(session, reminder_id)
            admin = self._authorize(reminder, token)
            cancel(session, reminder, self.clock())
            self.unschedule(reminder.id)
            return public_fields(task_fields(reminder)), admin

    def page(
        self,
        status: ReminderStatus | None,
        email: str | None,
        limit: int,
        cursor: str | None,
        *,
        error_contains: str | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of reminders, most recently changed first, and the cursor to the next;
        error_contains keeps those whose last error contains it (case-insensitively), as
        retry_matching selects them."""

        def fetch(before: tuple[datetime, str] | None, count: int) -> list[dict[str, Any]]:
            with self.sessions() as session:
                found = find_reminders(
                    session,
                    status=status,
                    email=email,
                    error_contains=error_contains,
                    limit=count,
                    before=before,
                )
                return [public_fields(task_fields(task), updated=True) for task in found]

        return keyset_page(
            fetch,
            cursor=cursor,
            position=TIME_POSITION,
            limit=limit,
            cursor_after=lambda item: time_cursor(item["updated_at"], item["id"]),
        )

    def retry(self, reminder_id: str) -> dict[str, Any]:
        """Schedule a failed or missed reminder again, now."""
        with self.sessions() as session:
            reminder = get_reminder(session, reminder_id)
            self._requeue(session, reminder)
            return public_fields(task_fields(reminder))

    def retry_matching(
        self,
        status: ReminderStatus,
        email: str | None,
        error_contains: str | None,
        finished_after: datetime | None,
        finished_before: datetime | None,
        limit: int,
    ) -> list[str]:
        with self.sessions() as session:
            matching = find_reminders(
                session,
                status=status,
                email=email,
                error_contains=error_contains,
                finished_after=finished_after,
                finished_before=finished_before,
                limit=limit,
            )
            for reminder in matching:
                self._requeue(session, reminder)
            return [reminder.id for reminder in matching]

    def _requeue(self, session: Session, reminder: Task) -> None:
        now = self.clock()
        requeue(session, reminder, now)
        self.schedule(reminder.id, now)

    def _authorize(self, reminder: Task, token: str) -> bool:
        ttl = timedelta(days=self.settings.retention.cancel_token_days)
        return authorize(reminder, token, self.admin_token, now=self.clock(), token_ttl=ttl)
