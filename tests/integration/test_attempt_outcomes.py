"""How a failed attempt's outcome is written: only while the task is still in that attempt.

A leader that was paused mid-attempt (past its lease) wakes to find its attempt failed (an SMTP
timeout that ran out during the pause): by then the new leader has put the task back and run
it again. The late failure must neither undo what the new leader did nor schedule a retry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scheduler_app.db.models import Task, TaskStatus
from scheduler_app.tasks import attempts, store
from scheduler_app.tasks.attempts import AttemptStart, TaskAttempt
from tests.support import reminder_task

NOW = datetime.now(UTC)
RETRY_AT = NOW + timedelta(seconds=30)


def running_task(session: Session) -> TaskAttempt:
    """A due task with its first attempt under way."""
    session.add(reminder_task(id="t1", remind_at=NOW - timedelta(seconds=1), created_at=NOW))
    session.commit()
    return start(session)


def start(session: Session) -> TaskAttempt:
    outcome, attempt = attempts.start_one(session, AttemptStart("t1", NOW, None))
    session.commit()
    assert outcome == "run"
    assert attempt is not None
    return attempt


def task(session: Session) -> Task:
    session.expire_all()
    found = session.get(Task, "t1")
    assert found is not None
    return found


def test_a_failed_attempt_still_under_way_records_its_retry_and_its_failure(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        first = running_task(session)
        assert attempts.record_retry(session, "t1", first.attempts, NOW, RETRY_AT, "boom")
        session.commit()
        assert (task(session).status, task(session).next_attempt_at) == ("scheduled", RETRY_AT)

        second = start(session)
        assert attempts.mark_failed(session, "t1", second.attempts, NOW, "boom again")
        session.commit()
        assert (task(session).status, task(session).last_error) == ("failed", "boom again")


def test_the_late_failure_of_an_attempt_run_again_since_changes_nothing(engine: Engine) -> None:
    with Session(engine) as session:
        stale = running_task(session)
        # The new leader's catch-up puts it back, then runs it again.
        store.interrupted(session, NOW)
        session.commit()
        again = start(session)
        assert again.attempts == stale.attempts + 1

        assert not attempts.record_retry(session, "t1", stale.attempts, NOW, RETRY_AT, "late")
        assert not attempts.mark_failed(session, "t1", stale.attempts, NOW, "late")
        session.commit()
        running = task(session)
        assert (running.status, running.next_attempt_at, running.last_error) == (
            "running",
            None,
            None,
        )

        attempts.mark_all_succeeded(session, [("t1", NOW)])
        session.commit()
        assert not attempts.record_retry(session, "t1", again.attempts, NOW, RETRY_AT, "late")
        assert not attempts.mark_failed(session, "t1", again.attempts, NOW, "late")
        session.commit()
        assert task(session).status == TaskStatus.SUCCEEDED


def test_the_failure_of_an_attempt_whose_task_was_cancelled_meanwhile_changes_nothing(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        attempt = running_task(session)
        assert store.finish(session, "t1", TaskStatus.CANCELLED, NOW)
        session.commit()

        assert not attempts.record_retry(session, "t1", attempt.attempts, NOW, RETRY_AT, "late")
        assert not attempts.mark_failed(session, "t1", attempt.attempts, NOW, "late")
        session.commit()
        assert task(session).status == TaskStatus.CANCELLED
