from __future__ import annotations

from datetime import UTC, datetime

from scheduler_app.tasks.recovery import orphaned_tasks

DUE = datetime(2026, 3, 1, tzinfo=UTC)
JOB = "deliver_reminder"


def job_ids(job: str, task_id: str) -> str:
    return f"{'reminder' if job == JOB else 'task'}:{task_id}"


def test_only_tasks_without_a_stored_or_running_job_are_orphans() -> None:
    scheduled = [("a", JOB, DUE), ("b", JOB, DUE), ("c", JOB, DUE), ("d", "other", DUE)]
    stored = {"reminder:a", "task:d"}
    running = {"reminder:b"}
    assert orphaned_tasks(scheduled, job_ids, stored, running) == [("c", JOB, DUE)]


def test_nothing_is_orphaned_when_every_job_is_stored() -> None:
    scheduled = [("a", JOB, DUE)]
    assert orphaned_tasks(scheduled, job_ids, {"reminder:a", "cron:x"}, set()) == []
