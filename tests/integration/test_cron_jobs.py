"""Cron jobs from config.yaml: reconciled at start-up and on reload, run with run records."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from scheduler_app.builtin import REGISTRY
from scheduler_app.cron.reconcile import reconcile
from scheduler_app.db.engine import create_session_factory
from scheduler_app.db.models import CronJob, JobRun
from scheduler_app.engine.executor import JobContext, RegisteredJob, registered_job
from scheduler_app.engine.scheduler import QuarantiningJobStore
from scheduler_app.errors import ConfigError
from scheduler_app.runtime import Runtime, job_specs
from tests.support import ADMIN, Deployment, make_settings, until_released, wait_until

CALLS: list[tuple[str, int]] = []
# A lingering job runs until the test has seen what it waits for, however slow the machine.
RELEASE_LINGERING = threading.Event()


async def note(ctx: JobContext, label: str, times: int = 1) -> str:
    """Record a call; slow enough to be seen running."""
    await asyncio.sleep(0.01)
    CALLS.append((label, times))
    return f"noted {label}"


async def explode(ctx: JobContext) -> None:
    raise RuntimeError("the report server is on fire")


async def linger(ctx: JobContext, label: str) -> str:
    """Record a call, then stay running until the test releases it (at most 10 s)."""
    CALLS.append((label, 0))
    await until_released(RELEASE_LINGERING)
    return f"lingered {label}"


TEST_REGISTRY = {
    **REGISTRY,
    "note": RegisteredJob("note", note, "Record a call."),
    "explode": RegisteredJob("explode", explode, "Always fail."),
    "linger": RegisteredJob("linger", linger, "Take a while."),
}

NOTE_JOB = {"id": "note-a", "job": "note", "cron": "0 8 * * *", "args": ["a"]}
EXPLODE_JOB = {"id": "boom", "job": "explode", "cron": "30 6 * * *", "timezone": "Europe/Berlin"}


@pytest.fixture(autouse=True)
def _forget_calls() -> Iterator[None]:
    CALLS.clear()
    RELEASE_LINGERING.clear()
    yield
    RELEASE_LINGERING.set()
    CALLS.clear()


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Deployment:
    return Deployment(tmp_path, database_url, registry=TEST_REGISTRY)


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app_state["runtime"]
    return runtime


def cron_jobs(client: TestClient) -> dict[str, Any]:
    """The stored APScheduler cron jobs, by id."""
    return {
        job.id: job
        for job in runtime_of(client).scheduler.get_jobs()
        if not job.id.startswith("reminder:")
    }


def runs_of(client: TestClient, job_id: str) -> list[JobRun]:
    with runtime_of(client).sessions() as session:
        return list(
            session.scalars(
                select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.scheduled_for)
            )
        )


def make_due(client: TestClient, job_id: str, when: datetime | None = None) -> None:
    """Move the job's next run to `when` (default now), as if the time had come."""
    runtime_of(client).scheduler.modify_job(job_id, next_run_time=when or datetime.now(UTC))


def test_start_up_stores_each_configured_job_once(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB, EXPLODE_JOB])
    with deployment.client() as client:
        jobs = cron_jobs(client)
        first_next_runs = {job_id: job.next_run_time for job_id, job in jobs.items()}
        assert set(jobs) == {"note-a", "boom", "token-cleanup"}  # and the built-in maintenance
        assert str(jobs["boom"].trigger) == "cron: 30 6 * * * (Europe/Berlin)"
        assert (
            jobs["boom"].next_run_time.astimezone(jobs["boom"].trigger.timezone).strftime("%H:%M")
            == "06:30"
        )
        assert jobs["note-a"].misfire_grace_time == 3600

    for _ in range(3):
        with deployment.client() as client:
            jobs = cron_jobs(client)
            assert {job_id: job.next_run_time for job_id, job in jobs.items()} == first_next_runs
            with runtime_of(client).sessions() as session:
                assert len(session.scalars(select(CronJob)).all()) == 3


def test_restart_applies_changes_and_keeps_reminders(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB, EXPLODE_JOB])
    with deployment.client() as client:
        kept_next_run = cron_jobs(client)["note-a"].next_run_time
        reminder = client.post(
            "/subscribe", json={"email": "a@example.com", "delay_seconds": 3600}
        ).json()

    changed_args = {**NOTE_JOB, "args": ["b"], "description": "now with b"}
    new_job = {"id": "note-c", "job": "note", "cron": "*/5 * * * *", "args": ["c"]}
    deployment.write([changed_args, new_job])
    with deployment.client() as client:
        jobs = cron_jobs(client)
        assert set(jobs) == {"note-a", "note-c", "token-cleanup"}
        assert jobs["note-a"].args == ("note", "b")
        assert jobs["note-a"].name == "now with b"
        assert jobs["note-a"].next_run_time == kept_next_run  # only the arguments changed
        shown = client.get(f"/reminders/{reminder['id']}", headers=ADMIN).json()
        assert shown["status"] == "scheduled"
        assert f"reminder:{reminder['id']}" in {
            job.id for job in runtime_of(client).scheduler.get_jobs()
        }

    deployment.write([{**changed_args, "cron": "15 9 * * *"}])
    with deployment.client() as client:
        moved = cron_jobs(client)["note-a"].next_run_time
        assert moved.strftime("%H:%M") == "09:15"


def test_a_seconds_field_runs_the_job_every_few_seconds(deployment: Deployment) -> None:
    deployment.write([{"id": "tick", "job": "note", "cron": "*/2 * * * * *", "args": ["t"]}])
    with deployment.client() as client:
        [listed] = [job for job in job_list(client) if job["id"] == "tick"]
        assert listed["trigger"] == "cron: */2 * * * * * (UTC)"
        assert listed["schedule_text"].startswith("Every 2 seconds")

        def two_runs() -> list[JobRun] | None:
            done = [r for r in runs_of(client, "tick") if r.outcome == "success"]
            return done[:2] if len(done) >= 2 else None

        # The first run comes at the next even second, the second 2 s later.
        first, second = wait_until(two_runs, timeout_s=6)

    assert CALLS[:2] == [("t", 1), ("t", 1)]
    assert first.scheduled_for.second % 2 == second.scheduled_for.second % 2 == 0
    gap = second.scheduled_for - first.scheduled_for
    # Two seconds apart, unless a busy machine made the scheduler skip (coalesce) a run.
    assert gap > timedelta(0)
    assert gap % timedelta(seconds=2) == timedelta(0)


def test_a_disabled_job_is_stored_paused(deployment: Deployment) -> None:
    deployment.write([{**NOTE_JOB, "enabled": False}])
    with deployment.client() as client:
        assert cron_jobs(client)["note-a"].next_run_time is None
    deployment.write([NOTE_JOB])
    with deployment.client() as client:
        assert cron_jobs(client)["note-a"].next_run_time is not None


def test_a_bad_file_stops_start_up_and_changes_nothing(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB])
    with deployment.client():
        pass
    deployment.write([NOTE_JOB, {"id": "x", "job": "no_such_job", "cron": "61 * * * *"}])
    with pytest.raises(ConfigError) as raised, deployment.client():
        pass
    assert "jobs[1] 'x'" in raised.value.message
    assert "unknown job 'no_such_job'" in raised.value.message
    assert "minute" in raised.value.message


def test_reload_applies_the_file_and_refuses_a_bad_one(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB, EXPLODE_JOB])
    with deployment.client() as client:
        assert client.post("/admin/reload").status_code == 401
        wrong = {"Authorization": "Bearer not-the-admin-token"}
        assert client.post("/admin/reload", headers=wrong).status_code == 401

        new_job = {"id": "note-c", "job": "note", "cron": "*/5 * * * *", "args": ["c"]}
        deployment.write([{**NOTE_JOB, "cron": "0 9 * * *"}, new_job])
        answer = client.post("/admin/reload", headers=ADMIN)
        assert answer.status_code == 200
        assert answer.json() == {
            "added": ["note-c"],
            "changed": ["note-a"],
            "removed": ["boom"],
            "unchanged": ["token-cleanup"],
        }
        assert set(cron_jobs(client)) == {"note-a", "note-c", "token-cleanup"}

        before = {job_id: job.next_run_time for job_id, job in cron_jobs(client).items()}
        deployment.write([{"id": "note-a", "job": "note", "cron": "0 25 * * *", "colour": 1}])
        refused = client.post("/admin/reload", headers=ADMIN)
        assert refused.status_code == 422
        problems = refused.json()["detail"]
        assert any("hour" in line and "note-a" in line for line in problems)
        assert any("unknown key 'colour'" in line for line in problems)
        after = {job_id: job.next_run_time for job_id, job in cron_jobs(client).items()}
        assert after == before

        again = client.post("/admin/reload", headers=ADMIN)
        assert again.status_code == 422


def test_every_run_leaves_a_record(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB, EXPLODE_JOB])
    with deployment.client() as client:
        make_due(client, "note-a")
        make_due(client, "boom")
        [success] = wait_until(lambda: [r for r in runs_of(client, "note-a") if r.finished_at])
        [failure] = wait_until(lambda: [r for r in runs_of(client, "boom") if r.finished_at])
        next_boom = cron_jobs(client)["boom"].next_run_time

    assert CALLS == [("a", 1)]
    assert success.outcome == "success"
    assert success.result == "noted a"
    assert success.job == "note"
    assert success.started_at is not None
    assert success.finished_at is not None
    assert success.finished_at >= success.started_at
    assert failure.outcome == "error"
    assert failure.error == "RuntimeError: the report server is on fire"
    assert next_boom is not None
    assert next_boom > datetime.now(UTC)


def test_a_run_later_than_its_grace_is_recorded_missed(deployment: Deployment) -> None:
    deployment.write([{**NOTE_JOB, "misfire_grace_s": 60, "cron": "0 0 1 1 *"}])
    with deployment.client() as client:
        make_due(client, "note-a", datetime.now(UTC) - timedelta(hours=2))
        [record] = wait_until(lambda: runs_of(client, "note-a"))

    assert record.outcome == "missed"
    assert "past misfire_grace_s=60" in (record.error or "")
    assert record.started_at is None
    assert CALLS == []


def test_coalescing_runs_once_and_records_each_skipped_run(deployment: Deployment) -> None:
    deployment.write([{**NOTE_JOB, "cron": "* * * * *"}])
    with deployment.client() as client:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        make_due(client, "note-a", start)
        wait_until(lambda: [r for r in runs_of(client, "note-a") if r.outcome == "success"])
        records = runs_of(client, "note-a")

    missed = [r for r in records if r.outcome == "missed"]
    assert CALLS == [("a", 1)]
    assert len(missed) == len(records) - 1 >= 5
    assert all("coalesced" in (r.error or "") for r in missed)
    assert missed[0].scheduled_for == start


def test_interrupted_runs_are_closed_at_start(deployment: Deployment) -> None:
    deployment.write([])
    with deployment.client() as client, runtime_of(client).sessions() as session:
        session.add(
            JobRun(
                id="r1",
                job_id="note-a",
                job="note",
                outcome="running",
                scheduled_for=datetime.now(UTC),
                started_at=datetime.now(UTC),
                manual=False,
            )
        )
        session.commit()
    with deployment.client() as client:
        [run] = runs_of(client, "note-a")
    assert run.outcome == "error"
    assert "interrupted" in (run.error or "")


def test_the_built_in_jobs_run_through_the_scheduler(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.write(
        [
            {"id": "daily-report", "job": "daily_report", "cron": "0 8 * * *"},
            {
                "id": "token-cleanup",
                "job": "token_cleanup",
                "cron": "*/15 * * * *",
                "kwargs": {"batch_size": 10},
            },
        ]
    )
    with deployment.client() as client:
        reminder_id = client.post(
            "/subscribe", json={"email": "a@example.com", "delay_seconds": 0.1}
        ).json()["id"]
        wait_until(lambda: [r for r in runs_of(client, f"reminder:{reminder_id}") if r.finished_at])
        make_due(client, "daily-report")
        make_due(client, "token-cleanup")
        [report] = wait_until(lambda: [r for r in runs_of(client, "daily-report") if r.finished_at])
        [cleanup] = wait_until(
            lambda: [r for r in runs_of(client, "token-cleanup") if r.finished_at]
        )
        [delivery] = runs_of(client, f"reminder:{reminder_id}")

    assert delivery.outcome == "success"
    assert delivery.job == "deliver_reminder"
    assert report.outcome == "success", report.error
    assert "1 created, 1 sent" in (report.result or "")
    reports = sorted(path.name for path in (tmp_path / "reports").iterdir())
    assert [name.rsplit(".", 1)[1] for name in reports] == ["json", "md"]
    assert cleanup.outcome == "success", cleanup.error
    assert "tokens expired: 0" in (cleanup.result or "")


def running_record(client: TestClient, job_id: str) -> JobRun | None:
    return next((r for r in runs_of(client, job_id) if r.outcome == "running"), None)


def test_a_run_due_while_the_previous_one_runs_is_recorded_missed(
    deployment: Deployment,
) -> None:
    deployment.write([{"id": "slow", "job": "linger", "cron": "0 0 1 1 *", "args": ["s"]}])
    with deployment.client() as client:
        make_due(client, "slow")
        wait_until(lambda: running_record(client, "slow"))
        make_due(client, "slow")
        wait_until(lambda: [r for r in runs_of(client, "slow") if r.outcome == "missed"])
        RELEASE_LINGERING.set()
        wait_until(lambda: [r for r in runs_of(client, "slow") if r.outcome == "success"])
        records = runs_of(client, "slow")

    assert CALLS == [("s", 0)]
    assert sorted(r.outcome for r in records) == ["missed", "success"]
    [missed] = [r for r in records if r.outcome == "missed"]
    assert "previous run of this job was still running" in (missed.error or "")


def test_a_one_off_run_due_while_the_same_job_runs_follows_it(deployment: Deployment) -> None:
    """The shape of a retry scheduled by the attempt that is still recording its failure."""
    deployment.write([])
    with deployment.client() as client:
        scheduler = runtime_of(client).scheduler

        def due_now(label: str) -> None:
            scheduler.add_job(
                registered_job,
                trigger=DateTrigger(datetime.now(UTC)),
                args=("linger", label),
                id="one-off",
                replace_existing=True,
            )

        due_now("first")
        wait_until(lambda: running_record(client, "one-off"))
        due_now("second")
        # Once the scheduler has let go of the one-off job, its second run is in hand.
        wait_until(lambda: scheduler.get_job("one-off") is None)
        RELEASE_LINGERING.set()
        wait_until(lambda: len([r for r in runs_of(client, "one-off") if r.finished_at]) == 2)

    assert CALLS == [("first", 0), ("second", 0)]


def test_maintenance_runs_unless_the_file_gives_it_an_entry(deployment: Deployment) -> None:
    deployment.write([NOTE_JOB])
    with deployment.client() as client:
        [builtin] = [job for job in job_list(client) if job["id"] == "token-cleanup"]
        assert (builtin["job"], builtin["source"], builtin["paused"]) == (
            "token_cleanup",
            "builtin",
            False,
        )
        assert builtin["trigger"] == "cron: */15 * * * * (UTC)"
        refused = client.delete("/jobs/token-cleanup", headers=ADMIN)
        assert refused.status_code == 409
        assert "built-in maintenance" in refused.json()["detail"]

    # An entry of the file for the job replaces the built-in one: here, to switch it off.
    deployment.write(
        [NOTE_JOB, {"id": "cleanup", "job": "token_cleanup", "cron": "0 3 * * *", "enabled": False}]
    )
    with deployment.client() as client:
        listed = {job["id"]: job for job in job_list(client)}
        assert "token-cleanup" not in listed
        assert (listed["cleanup"]["source"], listed["cleanup"]["paused"]) == ("config", True)

    # ... or to move it.
    deployment.write([{"id": "token-cleanup", "job": "token_cleanup", "cron": "0 4 * * *"}])
    with deployment.client() as client:
        [moved] = [job for job in job_list(client) if job["id"] == "token-cleanup"]
        assert (moved["source"], moved["trigger"]) == ("config", "cron: 0 4 * * * (UTC)")


def job_list(client: TestClient) -> list[dict[str, Any]]:
    answer = client.get("/jobs", params={"kind": "cron"}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_processes_starting_together_store_each_new_job_once(engine: Engine) -> None:
    specs = job_specs(make_settings(Path("unused"), "sqlite://"), REGISTRY)
    now = datetime(2026, 12, 4, 9, tzinfo=UTC)
    sessions = create_session_factory(engine)
    schedulers = [
        BackgroundScheduler(
            jobstores={"default": QuarantiningJobStore(engine=engine)}, timezone=UTC
        )
        for _ in range(2)
    ]
    for scheduler in schedulers:
        scheduler.start(paused=True)
    try:
        with sessions() as first, sessions() as second:
            # The other process stores the same new jobs after this one read that there were
            # none, just before this one stores them.
            def other_process_first(*_: object) -> None:
                reconcile(second, schedulers[1], specs, now)

            event.listen(first, "before_flush", other_process_first, once=True)
            plan = reconcile(first, schedulers[0], specs, now)
        assert plan.summary()["unchanged"] == [spec.id for spec in specs]
        with sessions() as session:
            assert session.scalars(select(CronJob.id)).all() == [spec.id for spec in specs]
        assert [job.id for job in schedulers[0].get_jobs()] == [spec.id for spec in specs]
    finally:
        for scheduler in schedulers:
            scheduler.shutdown(wait=False)
