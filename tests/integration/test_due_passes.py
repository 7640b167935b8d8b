"""A burst of due jobs is read from the job store in passes of a bounded size, each followed by
the next as soon as the executor has few of them waiting, and every job of the burst runs once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from scheduler_app.engine import scheduler
from scheduler_app.runtime import Runtime
from tests.support import (
    make_settings,
    outbox_messages,
    reminder_ids,
    seed_reminder_jobs,
    wait_until,
)

BURST = 25
PER_PASS = 10


def test_a_pass_reads_the_earliest_due_jobs_up_to_its_limit(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, database_url)
    with TestClient(create_app(settings)):
        pass  # creates the schema and the job table
    now = datetime.now(UTC)
    due = [now - timedelta(seconds=BURST - n) for n in range(BURST)]
    job_ids = seed_reminder_jobs(database_url, [*due, now + timedelta(hours=1)])
    monkeypatch.setattr(scheduler, "DUE_PER_PASS", PER_PASS)
    store = scheduler.QuarantiningJobStore(url=database_url)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        first_pass = store.get_due_jobs(now)
        assert [job.id for job in first_pass] == job_ids[:PER_PASS]
        for job in first_pass:
            store.remove_job(job.id)  # what the scheduler does with a submitted one-off job
        # The pass ends by asking for the next run time: the rest of the burst is due already.
        next_run_time = store.get_next_run_time()
        assert next_run_time is not None
        assert next_run_time <= now
        assert [job.id for job in store.get_due_jobs(now)] == job_ids[PER_PASS : 2 * PER_PASS]
    finally:
        store.shutdown()


def test_every_job_of_a_burst_larger_than_a_pass_runs_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "DUE_PER_PASS", PER_PASS)
    settings = make_settings(tmp_path, database_url)
    with TestClient(create_app(settings)):
        pass  # creates the schema and the job table
    due = datetime.now(UTC) - timedelta(seconds=1)
    job_ids = seed_reminder_jobs(database_url, [due] * BURST)

    with TestClient(create_app(settings)):
        sent = wait_until(
            lambda: (
                messages if len(messages := outbox_messages(tmp_path / "outbox")) >= BURST else None
            )
        )

    counts = Counter(reminder_ids(sent))
    assert set(counts) == {job_id.removeprefix("reminder:") for job_id in job_ids}
    assert set(counts.values()) == {1}


def test_a_burst_is_read_from_the_store_as_the_executor_works_it_off(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting_limit = 4
    monkeypatch.setattr(scheduler, "DUE_PER_PASS", PER_PASS)
    monkeypatch.setattr(scheduler, "WAITING_BEFORE_NEXT_PASS", waiting_limit)
    settings = make_settings(tmp_path, database_url, scheduler={"max_concurrent_jobs": 1})
    with TestClient(create_app(settings)):
        pass  # creates the schema and the job table
    burst = 6 * PER_PASS
    due = datetime.now(UTC) - timedelta(seconds=1)
    job_ids = seed_reminder_jobs(database_url, [due] * burst)

    most_waiting = 0

    def all_sent() -> list[Any] | None:
        nonlocal most_waiting
        most_waiting = max(most_waiting, runtime.executor.waiting())
        sent = outbox_messages(tmp_path / "outbox")
        return sent if len(sent) >= burst else None

    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app_state["runtime"]
        sent = wait_until(all_sent, interval_s=0.001)

    # One job at a time works the burst off: read all at once, nearly all of it would wait.
    assert 0 < most_waiting <= waiting_limit + PER_PASS
    counts = Counter(reminder_ids(sent))
    assert set(counts) == {job_id.removeprefix("reminder:") for job_id in job_ids}
    assert set(counts.values()) == {1}
