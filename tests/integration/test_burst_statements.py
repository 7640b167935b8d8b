"""The statements that a burst of deliveries runs once per batch find the batch's rows by key, so
their cost follows the batch and not how many reminders or jobs are stored; and the batched
start of deliveries decides for each reminder what the one-by-one start would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from scheduler_app.db.models import Task, TaskStatus
from scheduler_app.engine import scheduler
from scheduler_app.tasks import attempts as delivery
from tests.support import seed_reminder_jobs, sent_statements

# One burst due at one instant, and the slice of it that one batch starts.
BURST = 5_000
BATCH = 20
WINDOW = timedelta(hours=24)


@pytest.fixture
def job_store(engine: Engine) -> Iterator[scheduler.QuarantiningJobStore]:
    store = scheduler.QuarantiningJobStore(engine=engine)
    store.start(BackgroundScheduler(timezone=UTC), "default")  # creates the job table
    yield store
    store.shutdown()


def plan_of(engine: Engine, statement: str, parameters: Any) -> str:
    """The plan the database chooses for the statement (without running it), one step a line.
    PostgreSQL is given statistics first, as autovacuum gives them soon after a burst."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            explain = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(row[-1] for row in explain)
        connection.exec_driver_sql("ANALYZE")
        explain = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(row[0] for row in explain)


def test_counting_a_batch_of_attempts_looks_up_each_reminder_by_id(
    engine: Engine, database_url: str, job_store: scheduler.QuarantiningJobStore
) -> None:
    now = datetime.now(UTC)
    ids = [job.removeprefix("reminder:") for job in seed_reminder_jobs(database_url, [now] * BURST)]
    sent = sent_statements(engine)
    with Session(engine) as session:
        starts = [delivery.AttemptStart(reminder_id, now, WINDOW) for reminder_id in ids[:BATCH]]
        assert [outcome for outcome, _ in delivery.start_attempts(session, starts)] == [
            "run"
        ] * BATCH
        session.rollback()

    [update_sent] = [statement for statement in sent if statement.text.startswith("UPDATE")]
    plan = plan_of(engine, update_sent.text, update_sent.parameters)
    # Not from the status index: that reads every scheduled reminder, the whole burst, per batch.
    assert "ix_tasks_status_run_at" not in plan, plan
    if engine.dialect.name == "sqlite":
        assert "SEARCH tasks USING INDEX sqlite_autoindex_tasks_1 (id=?)" in plan, plan
    else:
        assert "tasks_pkey" in plan, plan
        assert "Seq Scan on tasks" not in plan, plan


def test_removing_a_pass_of_submitted_jobs_looks_up_each_job_by_id(
    engine: Engine,
    database_url: str,
    job_store: scheduler.QuarantiningJobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    seed_reminder_jobs(database_url, [now] * BURST)
    monkeypatch.setattr(scheduler, "DUE_PER_PASS", BATCH)
    sent = sent_statements(engine)
    passed = job_store.get_due_jobs(now)
    assert len(passed) == BATCH
    for job in passed:
        job_store.remove_job(job.id)  # what the scheduler does with a submitted one-off job
    # Meanwhile one of them failed and stored its retry under the same id: that one stays.
    retried = passed[0]
    retried._modify(next_run_time=now + timedelta(minutes=1))
    job_store.update_job(retried)
    job_store.get_next_run_time()  # the end of the pass: the submitted jobs are removed

    [delete_sent] = [statement for statement in sent if statement.text.startswith("DELETE")]
    plan = plan_of(engine, delete_sent.text, delete_sent.parameters)
    if engine.dialect.name == "sqlite":
        # A scan would read every stored job (and its pickled state) for each pass.
        assert "SCAN apscheduler_jobs" not in plan, plan
        assert "USING INDEX sqlite_autoindex_apscheduler_jobs_1 (id=?)" in plan, plan
    else:
        # An index is searched for the pass's ids, not read for every job due at that time.
        assert "Seq Scan" not in plan, plan
        assert re.search(r"Index Cond: .*\(id\)::text = ", plan), plan
    stored = {job.id for job in job_store.get_all_jobs()}
    assert len(stored) == BURST - BATCH + 1
    assert retried.id in stored
    assert not {job.id for job in passed[1:]} & stored


def test_a_batch_decides_for_each_reminder_what_starting_it_alone_would(
    engine: Engine, database_url: str, job_store: scheduler.QuarantiningJobStore
) -> None:
    now = datetime.now(UTC)
    due, cancelled, late, requeued = (
        job.removeprefix("reminder:")
        for job in seed_reminder_jobs(database_url, [now, now, now - 2 * WINDOW, now - 2 * WINDOW])
    )
    with Session(engine) as session:
        session.execute(
            update(Task).where(Task.id == cancelled).values(status=TaskStatus.CANCELLED)
        )
        # Re-queued by an operator: the window counts from then, not from its due time.
        session.execute(update(Task).where(Task.id == requeued).values(requeued_at=now))
        session.commit()

    with Session(engine) as session:
        starts = [
            delivery.AttemptStart(reminder_id, now, WINDOW)
            for reminder_id in (due, cancelled, late, requeued)
        ]
        outcomes = delivery.start_attempts(session, starts)
        session.commit()

    assert [outcome for outcome, _ in outcomes] == ["run", "skipped", "missed", "run"]
    assert [attempt.id for _, attempt in outcomes if attempt] == [due, requeued]
    assert {attempt.attempts for _, attempt in outcomes if attempt} == {1}
    with Session(engine) as session:
        stored = {
            reminder.id: reminder
            for reminder in session.query(Task).where(Task.id.in_([due, cancelled, late, requeued]))
        }
    assert stored[due].attempts == stored[requeued].attempts == 1
    assert stored[due].last_attempt_at == now
    assert stored[cancelled].attempts == 0
    assert stored[cancelled].status == TaskStatus.CANCELLED
    assert stored[late].status == TaskStatus.MISSED
    assert stored[late].attempts == 0
