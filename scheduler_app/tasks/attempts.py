"""Delivery bookkeeping: what a due reminder needs, and recording each attempt's outcome.

Each function is one database step of a delivery; the caller commits (steps of concurrent
deliveries share a transaction, see batch_writer).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    Table,
    Update,
    bindparam,
    column,
    func,
    or_,
    update,
)
from sqlalchemy.orm import Session

from scheduler_app.db.batch_writer import Grouped
from scheduler_app.db.bulk import update_rows
from scheduler_app.db.models import Reminder, ReminderStatus
from scheduler_app.reminders.service import MAX_ERROR_LENGTH, finish
from scheduler_app.settings import ReminderSettings

_REMINDERS = cast(Table, Reminder.__table__)
# +-20 %: reminders that failed together do not all come back at the same instant.
JITTER = 0.2


def retry_delay(attempt: int, policy: ReminderSettings, rng: random.Random) -> timedelta:
    """Wait after failed attempt number `attempt` (1-based): exponential, capped, jittered.

    With the defaults (30 s doubling, capped at 30 min, 8 attempts) the waits are about
    30 s, 1, 2, 4, 8, 16 and 30 min: roughly an hour from the first to the last attempt.
    """
    base = min(policy.retry_base_s * 2 ** (attempt - 1), policy.retry_max_s)
    return timedelta(seconds=base * rng.uniform(1 - JITTER, 1 + JITTER))


@dataclass(frozen=True)
class Attempt:
    """A reminder about to be sent: what its message needs, and its attempt number (1-based)."""

    reminder_id: str
    email: str
    subject: str
    message: str
    remind_at: datetime
    attempts: int


def start_delivery(
    session: Session, reminder_id: str, now: datetime, late_window: timedelta
) -> tuple[str, Attempt | None]:
    """Decide what a due reminder needs: ("send", attempt) with the attempt counted,
    ("missed", None) or ("failed", None) when it is past the late-delivery window (recorded
    with the reason), or ("skipped", None) when it is no longer scheduled."""
    reminder = session.get(Reminder, reminder_id)
    if reminder is None or reminder.status != ReminderStatus.SCHEDULED:
        return "skipped", None
    since = max(reminder.remind_at, reminder.requeued_at or reminder.remind_at)
    late = now - since
    if late > late_window:
        reason = (
            f"came due at {since.isoformat()} and could only be delivered "
            f"{_span(late)} later, past the late-delivery window of {_span(late_window)}"
        )
        status = ReminderStatus.MISSED
        if reminder.last_error:  # earlier attempts failed: it failed, it was not just late
            status = ReminderStatus.FAILED
            reason += f"; last error: {reminder.last_error}"
        elif reminder.attempts:
            reason += (
                f"; an attempt at {reminder.last_attempt_at} was interrupted and may have "
                "delivered it"
            )
        finish(session, reminder_id, status, now, reason)
        return status.value, None
    counted = session.execute(
        _COUNT_ONE_ATTEMPT, {"reminder_id": reminder_id, "now": now}
    ).one_or_none()
    if counted is None:
        return "skipped", None
    return "send", Attempt(*counted)


@dataclass(frozen=True)
class DeliveryStart:
    reminder_id: str
    now: datetime
    late_window: timedelta


def start_deliveries(
    session: Session, starts: list[DeliveryStart]
) -> list[tuple[str, Attempt | None]]:
    """start_delivery for many reminders: those still scheduled and within the late-delivery
    window get their attempt counted by one UPDATE; the others go one by one."""
    now = max(start.now for start in starts)
    reminder_ids = list(dict.fromkeys(start.reminder_id for start in starts))
    statement, listed = _count_listed(session.connection().dialect.name, reminder_ids)
    window = {"now": now, "cutoff": now - starts[0].late_window}
    counted = session.execute(statement, {**window, **listed}).all()
    by_id = {row.id: Attempt(*row) for row in counted}
    return [
        ("send", by_id[start.reminder_id])
        if start.reminder_id in by_id
        else start_delivery(session, start.reminder_id, start.now, start.late_window)
        for start in starts
    ]


# Count one more attempt of the reminders that the caller selects (those still scheduled);
# returns an Attempt's fields.
# Core rather than the ORM: in a burst this runs for thousands of rows, and loading them as ORM
# objects cost more than the database did. Built once: building it per batch cost more than
# running it.
_COUNT_ATTEMPT = (
    update(_REMINDERS)
    .values(
        attempts=_REMINDERS.c.attempts + 1,
        last_attempt_at=bindparam("now"),
        updated_at=bindparam("now"),
        next_attempt_at=None,
    )
    .returning(
        _REMINDERS.c.id,
        _REMINDERS.c.email,
        _REMINDERS.c.subject,
        _REMINDERS.c.message,
        _REMINDERS.c.remind_at,
        _REMINDERS.c.attempts,
    )
)
_COUNT_ONE_ATTEMPT = _COUNT_ATTEMPT.where(
    _REMINDERS.c.id == bindparam("reminder_id"), _REMINDERS.c.status == ReminderStatus.SCHEDULED
)


def _count_listed(dialect: str, reminder_ids: list[str]) -> tuple[Update, dict[str, Any]]:
    """The UPDATE that counts an attempt of each listed reminder that is still scheduled and
    within the late-delivery window, and the parameters that list them.

    The reminders are joined as rows of (id, 'scheduled'), the status included, so that no plan
    can start from the status index: as `id IN (...) AND status = 'scheduled'`, SQLite (always)
    and PostgreSQL (before it has statistics, as right after a burst was posted) read every
    scheduled reminder for each batch: 27 ms for 100 of 5,000 on PostgreSQL. The rows go as one
    parameter, so that the statement is the same for every batch and is compiled once: on
    PostgreSQL two arrays (see bulk), on SQLite a JSON object of id to status, whose entries
    json_each() gives as (key, value). A text with one placeholder per reminder was compiled
    again for every new batch size: about a millisecond each, hundreds of times in a burst.
    """
    if dialect == "postgresql":
        statuses = [ReminderStatus.SCHEDULED.value] * len(reminder_ids)
        return _COUNT_UNNESTED, {"ids": reminder_ids, "statuses": statuses}
    listed = json.dumps(dict.fromkeys(reminder_ids, ReminderStatus.SCHEDULED.value))
    return _COUNT_JSON_EACH, {"listed": listed}


def _count_in_window(reminder_id: ColumnElement[str], status: ColumnElement[str]) -> Update:
    return _COUNT_ATTEMPT.where(
        _REMINDERS.c.id == reminder_id,
        _REMINDERS.c.status == status,
        or_(
            _REMINDERS.c.remind_at >= bindparam("cutoff"),
            _REMINDERS.c.requeued_at >= bindparam("cutoff"),
        ),
    )


_UNNESTED = (
    func.unnest(bindparam("ids", type_=ARRAY(String)), bindparam("statuses", type_=ARRAY(String)))
    .table_valued(column("id", String), column("status", String))
    .render_derived()
)
_COUNT_UNNESTED = _count_in_window(_UNNESTED.c.id, _UNNESTED.c.status)
_JSON_EACH = func.json_each(bindparam("listed", type_=String)).table_valued(
    column("key", String), column("value", String)
)
_COUNT_JSON_EACH = _count_in_window(_JSON_EACH.c.key, _JSON_EACH.c.value)


def mark_all_sent(session: Session, sent: list[tuple[str, datetime]]) -> list[None]:
    """Mark many reminders sent, in one statement. Unconditional: once a message is out, "sent"
    is the truth even if a cancel raced it."""
    rows = [(reminder_id, now, now, now) for reminder_id, now in sent]
    update_rows(
        session,
        _REMINDERS,
        "id",
        ("sent_at", "finished_at", "updated_at"),
        rows,
        # An earlier attempt's error no longer describes a reminder that was sent.
        constants={"status": ReminderStatus.SENT, "next_attempt_at": None, "last_error": None},
    )
    return [None] * len(sent)


START_DELIVERIES = Grouped("start deliveries", start_deliveries, patient=True)
MARK_SENT = Grouped("mark sent", mark_all_sent, patient=True)


def record_retry(
    session: Session, reminder_id: str, now: datetime, retry_at: datetime, error: str
) -> None:
    """Keep the reminder scheduled for another attempt at retry_at, with this attempt's error."""
    session.execute(
        update(Reminder)
        .where(Reminder.id == reminder_id, Reminder.status == ReminderStatus.SCHEDULED)
        .values(last_error=error[:MAX_ERROR_LENGTH], next_attempt_at=retry_at, updated_at=now)
    )


def _span(delta: timedelta) -> str:
    minutes, seconds = divmod(int(delta.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s"


def mark_failed(session: Session, reminder_id: str, now: datetime, error: str) -> None:
    finish(session, reminder_id, ReminderStatus.FAILED, now, error)
