"""Retention on real databases: each rule at its boundary, and the work done in batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from scheduler_app.channels import EMAIL
from scheduler_app.channels.email.outbox import OutboxBackend
from scheduler_app.db.batch_writer import BatchWriter
from scheduler_app.db.engine import SessionFactory, create_session_factory
from scheduler_app.db.models import JobRun, Task
from scheduler_app.engine.executor import JobContext
from scheduler_app.maintenance import retention as cleanup
from scheduler_app.maintenance.token_cleanup import token_cleanup
from scheduler_app.settings import RetentionSettings
from tests.support import make_settings, reminder_task

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
TOKEN_CUTOFF = NOW - timedelta(days=7)
KEY_CUTOFF = NOW - timedelta(hours=24)
REMINDER_CUTOFF = NOW - timedelta(days=90)
RUN_CUTOFF = NOW - timedelta(days=30)
RETENTION = {
    "cancel_token_days": 7,
    "idempotency_key_hours": 24,
    "reminder_days": 90,
    "run_days": 30,
}
NOTHING = (
    "tokens expired: 0, idempotency keys expired: 0, reminders deleted: 0, tasks deleted: 0, "
    "runs deleted: 0, audit entries deleted: 0, dashboard logins expired: 0"
)


def test_cutoffs_are_now_minus_each_retention_period() -> None:
    retention = RetentionSettings(
        cancel_token_days=7, idempotency_key_hours=1.5, reminder_days=90, task_days=10, run_days=30
    )
    cutoffs = cleanup.retention_cutoffs(NOW, retention)
    assert cutoffs == cleanup.Cutoffs(
        cancel_token=datetime(2026, 11, 14, 12, 0, tzinfo=UTC),
        idempotency_key=datetime(2026, 11, 21, 10, 30, tzinfo=UTC),
        reminder=datetime(2026, 8, 23, 12, 0, tzinfo=UTC),
        task=datetime(2026, 11, 11, 12, 0, tzinfo=UTC),
        run=datetime(2026, 10, 22, 12, 0, tzinfo=UTC),
        audit=datetime(2025, 11, 21, 12, 0, tzinfo=UTC),
        login=NOW,
    )


def test_cutoffs_are_in_utc_whatever_zone_now_is_given_in() -> None:
    local = NOW.astimezone(ZoneInfo("Asia/Tokyo"))
    cutoffs = cleanup.retention_cutoffs(local, RetentionSettings(run_days=30))
    assert cutoffs.run == RUN_CUTOFF
    assert cutoffs.run.tzinfo == UTC


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return create_session_factory(engine)


def context(
    tmp_path: Path, database_url: str, sessions: SessionFactory, **retention: Any
) -> JobContext:
    settings = make_settings(tmp_path, database_url, retention={**RETENTION, **retention})
    return JobContext(
        settings=settings,
        sessions=sessions,
        channels={EMAIL: OutboxBackend(settings.mail.outbox_dir)},
        clock=lambda: NOW,
        writer=BatchWriter(sessions),
    )


def reminder(
    status: str = "sent",
    *,
    finished_at: datetime | None = None,
    created_at: datetime | None = None,
    token: bool = True,
    key: bool = False,
) -> Task:
    created = created_at or (finished_at or NOW) - timedelta(hours=1)
    return reminder_task(
        id=str(uuid.uuid4()),
        remind_at=created + timedelta(minutes=30),
        status=status,
        created_at=created,
        finished_at=finished_at,
        cancel_token_hash=uuid.uuid4().hex if token else None,
        idempotency_key_hash=uuid.uuid4().hex if key else None,
        request_fingerprint=uuid.uuid4().hex if key else None,
    )


def run(
    outcome: str, *, finished_at: datetime | None, scheduled_for: datetime | None = None
) -> JobRun:
    return JobRun(
        id=str(uuid.uuid4()),
        job_id="nightly",
        job="some_job",
        scheduled_for=scheduled_for or (finished_at or NOW) - timedelta(minutes=1),
        started_at=None if outcome == "missed" else finished_at,
        finished_at=finished_at,
        outcome=outcome,
        manual=False,
    )


def store(sessions: SessionFactory, *rows: Task | JobRun) -> list[str]:
    with sessions() as session:
        session.add_all(rows)
        session.commit()
    return [row.id for row in rows]


def reminders_by_id(sessions: SessionFactory) -> dict[str, Task]:
    with sessions() as session:
        return {row.id: row for row in session.scalars(select(Task))}


def run_ids(sessions: SessionFactory) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(JobRun.id)))


@pytest.mark.anyio
async def test_cancel_tokens_expire_cancel_token_days_after_the_reminder_finished(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    expired = [
        reminder("sent", finished_at=TOKEN_CUTOFF - SECOND),
        reminder("failed", finished_at=TOKEN_CUTOFF - timedelta(days=1)),
        reminder("cancelled", finished_at=TOKEN_CUTOFF - timedelta(days=2)),
        reminder("missed", finished_at=TOKEN_CUTOFF - timedelta(days=3)),
    ]
    kept = [
        reminder("sent", finished_at=TOKEN_CUTOFF + SECOND),
        # "More than" is strict: exactly at the cutoff is still valid.
        reminder("cancelled", finished_at=TOKEN_CUTOFF),
        # A scheduled reminder has not finished: its token never expires, however old it is.
        reminder("scheduled", created_at=NOW - timedelta(days=60)),
    ]
    tokens = {row.id: row.cancel_token_hash for row in kept}
    store(sessions, *expired, *kept)

    summary = await token_cleanup(context(tmp_path, database_url, sessions))

    assert summary == NOTHING.replace("tokens expired: 0", "tokens expired: 4")
    stored = reminders_by_id(sessions)
    assert len(stored) == 7
    assert all(stored[row.id].cancel_token_hash is None for row in expired)
    assert {row.id: stored[row.id].cancel_token_hash for row in kept} == tokens


@pytest.mark.anyio
async def test_idempotency_keys_expire_idempotency_key_hours_after_creation(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    # Whatever the status: even a still scheduled reminder's key stops being replayable.
    scheduled = reminder("scheduled", created_at=KEY_CUTOFF - SECOND, key=True)
    finished = reminder(
        "sent", created_at=KEY_CUTOFF - timedelta(hours=5), finished_at=NOW, key=True
    )
    inside = reminder("scheduled", created_at=KEY_CUTOFF + SECOND, key=True)
    at_cutoff = reminder("scheduled", created_at=KEY_CUTOFF, key=True)
    keys = {
        row.id: (row.idempotency_key_hash, row.request_fingerprint) for row in (inside, at_cutoff)
    }
    store(sessions, scheduled, finished, inside, at_cutoff)

    summary = await token_cleanup(context(tmp_path, database_url, sessions))

    assert summary == NOTHING.replace("idempotency keys expired: 0", "idempotency keys expired: 2")
    stored = reminders_by_id(sessions)
    for row in (scheduled, finished):
        assert stored[row.id].idempotency_key_hash is None
        assert stored[row.id].request_fingerprint is None
        # Only the key is expired; the reminder and its cancel token stay.
        assert stored[row.id].cancel_token_hash == row.cancel_token_hash
        assert stored[row.id].status == row.status
    assert {
        row_id: (stored[row_id].idempotency_key_hash, stored[row_id].request_fingerprint)
        for row_id in keys
    } == keys


@pytest.mark.anyio
async def test_finished_reminders_are_deleted_after_reminder_days_but_never_scheduled_ones(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    deleted = store(
        sessions,
        reminder("sent", finished_at=REMINDER_CUTOFF - SECOND, token=False),
        reminder("failed", finished_at=REMINDER_CUTOFF - timedelta(days=10), token=False),
        reminder("cancelled", finished_at=REMINDER_CUTOFF - timedelta(days=20), token=False),
        reminder("missed", finished_at=REMINDER_CUTOFF - timedelta(days=30), token=False),
    )
    kept = store(
        sessions,
        reminder("sent", finished_at=REMINDER_CUTOFF + SECOND, token=False),
        reminder("sent", finished_at=REMINDER_CUTOFF, token=False),
        reminder("scheduled", created_at=NOW - timedelta(days=200), token=False),
        # Inconsistent, but the status decides: a scheduled reminder is never deleted.
        reminder("scheduled", finished_at=NOW - timedelta(days=200), token=False),
    )

    summary = await token_cleanup(context(tmp_path, database_url, sessions))

    assert summary == NOTHING.replace("reminders deleted: 0", "reminders deleted: 4")
    assert set(reminders_by_id(sessions)) == set(kept)
    assert not set(deleted) & set(reminders_by_id(sessions))


@pytest.mark.anyio
async def test_runs_are_deleted_after_run_days_but_never_running_ones(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    deleted = store(
        sessions,
        run("success", finished_at=RUN_CUTOFF - SECOND),
        run("error", finished_at=RUN_CUTOFF - timedelta(days=3)),
        run("missed", finished_at=RUN_CUTOFF - timedelta(days=1)),
        # A missed run that was never closed counts from the time it was scheduled for.
        run("missed", finished_at=None, scheduled_for=RUN_CUTOFF - SECOND),
    )
    kept = store(
        sessions,
        run("success", finished_at=RUN_CUTOFF + SECOND),
        run("error", finished_at=RUN_CUTOFF),
        # Scheduled long ago, but it finished recently: the finish time decides.
        run("success", finished_at=NOW, scheduled_for=NOW - timedelta(days=60)),
        run("missed", finished_at=None, scheduled_for=RUN_CUTOFF + SECOND),
        run("running", finished_at=None, scheduled_for=NOW - timedelta(days=100)),
        run("running", finished_at=NOW - timedelta(days=100)),
    )

    summary = await token_cleanup(context(tmp_path, database_url, sessions))

    assert summary == NOTHING.replace("runs deleted: 0", "runs deleted: 4")
    assert run_ids(sessions) == set(kept)
    assert not set(deleted) & run_ids(sessions)


def count_commits(sessions: SessionFactory) -> list[int]:
    commits = [0]

    def counted(_session: Session) -> None:
        commits[0] += 1

    event.listen(sessions, "after_commit", counted)
    return commits


def old_backlog(sessions: SessionFactory, rows: int) -> None:
    finished = NOW - timedelta(days=100)
    store(
        sessions,
        *(reminder("sent", finished_at=finished, key=True) for _ in range(rows)),
        *(run("success", finished_at=finished) for _ in range(rows)),
    )


@pytest.mark.anyio
async def test_finished_tasks_of_your_jobs_are_deleted_after_task_days(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    def task(status: str, finished_at: datetime | None) -> Task:
        return Task(
            id=str(uuid.uuid4()),
            job="send_invoice",
            args="{}",
            run_at=NOW - timedelta(days=400),
            status=status,
            attempts=1,
            created_at=NOW - timedelta(days=400),
            updated_at=finished_at or NOW,
            finished_at=finished_at,
        )

    task_cutoff = NOW - timedelta(days=10)
    deleted = store(sessions, task("succeeded", task_cutoff - SECOND))
    kept = store(
        sessions,
        task("failed", task_cutoff + SECOND),
        task("running", None),
        # Younger than reminder_days (90), but older than task_days (10): a reminder is kept.
        reminder("sent", finished_at=task_cutoff - SECOND, token=False),
    )

    ctx = context(tmp_path, database_url, sessions, task_days=10)
    summary = await token_cleanup(ctx)

    assert summary == NOTHING.replace("tasks deleted: 0", "tasks deleted: 1")
    assert set(reminders_by_id(sessions)) == set(kept)
    assert not set(deleted) & set(reminders_by_id(sessions))


@pytest.mark.anyio
async def test_a_backlog_is_worked_off_in_batches(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    old_backlog(sessions, 7)
    commits = count_commits(sessions)

    summary = await token_cleanup(context(tmp_path, database_url, sessions), batch_size=2)

    assert summary == (
        "tokens expired: 7, idempotency keys expired: 7, reminders deleted: 7, "
        "tasks deleted: 0, runs deleted: 7, audit entries deleted: 0, dashboard logins expired: 0"
    )
    assert reminders_by_id(sessions) == {}
    assert run_ids(sessions) == set()
    # Batches of 2, 2, 2 and 1 for each of the four steps with rows, each its own transaction;
    # one empty batch for the tasks of your own jobs, the audit entries and the logins.
    assert commits[0] == 4 * 4 + 3


@pytest.mark.anyio
async def test_the_batch_size_defaults_to_the_setting_and_a_full_last_batch_ends_with_an_empty_one(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    old_backlog(sessions, 6)
    commits = count_commits(sessions)

    summary = await token_cleanup(context(tmp_path, database_url, sessions, batch_size=3))

    assert summary == (
        "tokens expired: 6, idempotency keys expired: 6, reminders deleted: 6, "
        "tasks deleted: 0, runs deleted: 6, audit entries deleted: 0, dashboard logins expired: 0"
    )
    # 3, 3 and then 0 to learn that nothing is left (for the tasks of your own jobs, the audit
    # entries and the logins: 0 at once).
    assert commits[0] == 4 * 3 + 3


@pytest.mark.anyio
async def test_a_batch_larger_than_one_statement_takes_is_split(
    tmp_path: Path, database_url: str, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cleanup, "KEYS_PER_STATEMENT", 2)
    old_backlog(sessions, 5)
    commits = count_commits(sessions)

    summary = await token_cleanup(context(tmp_path, database_url, sessions), batch_size=10)

    assert summary == (
        "tokens expired: 5, idempotency keys expired: 5, reminders deleted: 5, "
        "tasks deleted: 0, runs deleted: 5, audit entries deleted: 0, dashboard logins expired: 0"
    )
    # One batch per step, the tasks of your own jobs', the audit entries' and the logins' included.
    assert commits[0] == 7
    assert reminders_by_id(sessions) == {}


@pytest.mark.anyio
async def test_an_empty_database_needs_no_change(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    assert await token_cleanup(context(tmp_path, database_url, sessions)) == NOTHING


@pytest.mark.anyio
@pytest.mark.parametrize("batch_size", [0, -1])
async def test_a_batch_size_below_one_is_refused(
    tmp_path: Path, database_url: str, sessions: SessionFactory, batch_size: int
) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        await token_cleanup(context(tmp_path, database_url, sessions), batch_size=batch_size)
