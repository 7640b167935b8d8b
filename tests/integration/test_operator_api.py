"""The operator API over real HTTP: a uvicorn server on loopback with its lifespan running."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import QueuePool

from scheduler_app.builtin import REGISTRY
from scheduler_app.db.engine import MAX_OVERFLOW, POOL_SIZE
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    Deployment,
    live_server,
    seed_reminder_jobs,
    wait_until,
)

CRON_JOBS = [
    {
        "id": "daily-report",
        "job": "daily_report",
        "cron": "0 8 * * *",
        "timezone": "Europe/Berlin",
        "description": "Summary of the day",
    },
    {"id": "token-cleanup", "job": "token_cleanup", "cron": "*/15 * * * *"},
]


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Deployment:
    deployment = Deployment(tmp_path, database_url, registry=REGISTRY)
    deployment.write(CRON_JOBS)
    return deployment


@pytest.fixture
def api(deployment: Deployment) -> Iterator[httpx.Client]:
    with live_server(deployment.app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def subscribe(api: httpx.Client, delay_s: float = 3600, **fields: Any) -> dict[str, Any]:
    response = api.post(
        "/subscribe", json={"email": "ada@example.com", "delay_seconds": delay_s, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/jobs/{job_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# How the listing statement of GET /jobs reads in SQL, to pick it out of every statement run.
LISTING_FROM = "FROM apscheduler_jobs LEFT OUTER JOIN cron_jobs"

ROUTES = [
    ("GET", "/jobs"),
    ("GET", "/jobs/daily-report"),
    ("GET", "/jobs/daily-report/runs"),
    ("DELETE", "/jobs/daily-report"),
    ("POST", "/jobs/daily-report/pause"),
    ("POST", "/jobs/daily-report/resume"),
    ("POST", "/jobs/daily-report/run"),
    ("GET", "/runs"),
    ("POST", "/admin/reload"),
]


def test_every_operator_route_needs_the_admin_token(api: httpx.Client) -> None:
    cancel_token = subscribe(api)["cancel_token"]
    for method, path in ROUTES:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {cancel_token}"},
            {"Authorization": "Basic dGVzdDp0ZXN0"},
        ):
            response = api.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["detail"]
    assert job(api, "daily-report")["paused"] is False  # nothing happened


def test_the_listing_orders_by_next_run_and_describes_each_job(api: httpx.Client) -> None:
    # Due before the daily report's next run at any time of day (at 07:00 UTC it is due in
    # seconds, so a fixed delay would put the reminder after it).
    now = datetime.now(UTC)
    berlin = now.astimezone(ZoneInfo("Europe/Berlin"))
    report_at = berlin.replace(hour=8, minute=0, second=0, microsecond=0)
    if report_at <= berlin:
        report_at += timedelta(days=1)
    delay_s = min(60.0, (report_at - now).total_seconds() / 2)
    reminder = subscribe(api, delay_s=delay_s, subject="Tea")
    api.post("/jobs/token-cleanup/pause", headers=ADMIN)

    page = api.get("/jobs", headers=ADMIN).json()
    ids = [item["id"] for item in page["items"]]
    assert ids == [f"reminder:{reminder['id']}", "daily-report", "token-cleanup"]
    assert page["next_cursor"] is None

    first, report, cleanup = page["items"]
    assert first["kind"] == "reminder"
    assert first["job"] == "deliver_reminder"
    assert first["source"] == "api"
    assert first["description"] == "Reminder to ada@example.com: Tea"
    assert first["trigger"] == f"date: {reminder['remind_at'][:19]}Z"
    assert (first["cron"], first["timezone"]) == (None, None)
    assert first["next_run_time"] is not None
    assert report == {
        "id": "daily-report",
        "kind": "cron",
        "job": "daily_report",
        "description": "Summary of the day",
        "trigger": "cron: 0 8 * * * (Europe/Berlin)",
        "cron": "0 8 * * *",
        "timezone": "Europe/Berlin",
        "schedule_text": "At 08:00, every day",
        "next_run_time": report["next_run_time"],
        "paused": False,
        "source": "config",
        "last_run": None,
    }
    next_report = datetime.fromisoformat(report["next_run_time"])
    assert next_report.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "08:00"
    assert cleanup["paused"] is True
    assert cleanup["next_run_time"] is None
    # A zone left out of config.yaml is UTC, and says so.
    assert (cleanup["cron"], cleanup["timezone"]) == ("*/15 * * * *", "UTC")

    # One job's detail carries the same fields as its item in the listing.
    detail = api.get("/jobs/daily-report", headers=ADMIN).json()
    assert (detail["cron"], detail["timezone"]) == ("0 8 * * *", "Europe/Berlin")
    reminder_job = api.get(f"/jobs/reminder:{reminder['id']}", headers=ADMIN).json()
    assert (reminder_job["cron"], reminder_job["timezone"]) == (None, None)
    assert {key: reminder_job[key] for key in first} == first

    kinds = api.get("/jobs", params={"kind": "cron"}, headers=ADMIN).json()["items"]
    assert [item["id"] for item in kinds] == ["daily-report", "token-cleanup"]
    found = api.get("/jobs", params={"q": "SUMMARY"}, headers=ADMIN).json()["items"]
    assert [item["id"] for item in found] == ["daily-report"]
    found = api.get("/jobs", params={"q": "ada@"}, headers=ADMIN).json()["items"]
    assert [item["kind"] for item in found] == ["reminder"]
    literal = api.get("/jobs", params={"q": "%"}, headers=ADMIN).json()["items"]
    assert literal == []


def test_a_page_walk_visits_every_job_exactly_once(api: httpx.Client, database_url: str) -> None:
    base = datetime.now(UTC) + timedelta(days=3)
    # Many jobs share a next run time, so pages must break ties by id; some are paused.
    due_times: list[datetime | None] = [base + timedelta(minutes=n % 200) for n in range(2_400)] + [
        None
    ] * 60
    seeded = set(seed_reminder_jobs(database_url, due_times))

    visited: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 137, "kind": "reminder"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/jobs", params=params, headers=ADMIN).json()
        visited += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ids = [item["id"] for item in visited]
    assert len(ids) == len(set(ids)) == len(seeded)
    assert set(ids) == seeded
    scheduled = [item for item in visited if not item["paused"]]
    times = [item["next_run_time"] for item in scheduled]
    assert times == sorted(times)
    assert all(item["paused"] for item in visited[len(scheduled) :])
    assert len(scheduled) == 2_400


def test_a_burst_due_at_one_instant_is_paged_from_an_index(
    api: httpx.Client, database_url: str
) -> None:
    # A page of jobs that share a due time must not sort the whole burst by id first: the plan
    # of the query GET /jobs really runs has no sort step.
    seed_reminder_jobs(database_url, [datetime.now(UTC) + timedelta(days=1)] * 3_000)
    pages: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if LISTING_FROM in statement:
            pages.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert len(api.get("/jobs", headers=ADMIN).json()["items"]) == 50
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    page, parameters = pages[0]
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                explain = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {page}", parameters)
                plan = [row[-1] for row in explain]
                assert not any("TEMP B-TREE" in step for step in plan), plan
            else:
                connection.exec_driver_sql("ANALYZE apscheduler_jobs")
                plan = [row[0] for row in connection.exec_driver_sql(f"EXPLAIN {page}", parameters)]
                assert not any("Sort" in step for step in plan), plan
    finally:
        engine.dispose()


def test_bad_paging_input_is_422(api: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"cursor": "garbage"}, {"kind": "other"}):
        response = api.get("/jobs", params=params, headers=ADMIN)
        assert response.status_code == 422, params
    assert api.get("/runs", params={"cursor": "bm90IGEgY3Vyc29y"}, headers=ADMIN).status_code == 422


def test_cancel_a_reminder_job_and_refuse_a_config_job(api: httpx.Client) -> None:
    reminder = subscribe(api)
    job_id = f"reminder:{reminder['id']}"
    assert api.delete(f"/jobs/{job_id}", headers=ADMIN).status_code == 204
    assert api.delete(f"/jobs/{job_id}", headers=ADMIN).status_code == 204  # still cancelled
    shown = api.get(f"/reminders/{reminder['id']}", headers=ADMIN).json()
    assert shown["status"] == "cancelled"
    assert job_id not in [item["id"] for item in api.get("/jobs", headers=ADMIN).json()["items"]]
    assert api.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 404

    refused = api.delete("/jobs/daily-report", headers=ADMIN)
    assert refused.status_code == 409
    assert "pause" in refused.json()["detail"]
    assert "config.yaml" in refused.json()["detail"]
    assert api.delete("/jobs/no-such-job", headers=ADMIN).status_code == 404
    assert api.delete("/jobs/reminder:no-such", headers=ADMIN).status_code == 404


def test_pause_survives_restart_and_reload(deployment: Deployment) -> None:
    with live_server(deployment.app()) as url, httpx.Client(base_url=url) as api:
        first = api.post("/jobs/daily-report/pause", headers=ADMIN)
        assert first.status_code == 200
        assert first.json()["paused"] is True
        again = api.post("/jobs/daily-report/pause", headers=ADMIN)
        assert again.status_code == 200
        assert api.post("/admin/reload", headers=ADMIN).status_code == 200
        assert job(api, "daily-report")["paused"] is True

    deployment.write([{**CRON_JOBS[0], "description": "edited"}, CRON_JOBS[1]])
    with live_server(deployment.app()) as url, httpx.Client(base_url=url) as api:
        restarted = job(api, "daily-report")
        assert restarted["paused"] is True
        assert restarted["description"] == "edited"
        resumed = api.post("/jobs/daily-report/resume", headers=ADMIN).json()
        assert resumed["paused"] is False
        assert resumed["next_run_time"] is not None
        assert api.post("/jobs/daily-report/resume", headers=ADMIN).status_code == 200

    deployment.write([{**CRON_JOBS[0], "enabled": False}, CRON_JOBS[1]])
    with live_server(deployment.app()) as url, httpx.Client(base_url=url) as api:
        refused = api.post("/jobs/daily-report/resume", headers=ADMIN)
        assert refused.status_code == 409
        assert "enabled" in refused.json()["detail"]


def test_a_paused_reminder_waits_and_resumes_at_once(api: httpx.Client) -> None:
    reminder = subscribe(api, delay_s=0.5)
    job_id = f"reminder:{reminder['id']}"
    assert api.post(f"/jobs/{job_id}/pause", headers=ADMIN).json()["paused"] is True
    due = datetime.fromisoformat(reminder["remind_at"])
    wait_until(lambda: datetime.now(UTC) > due + timedelta(seconds=0.5))
    assert api.get(f"/reminders/{reminder['id']}", headers=ADMIN).json()["status"] == "scheduled"

    api.post(f"/jobs/{job_id}/resume", headers=ADMIN)
    wait_until(
        lambda: api.get(f"/reminders/{reminder['id']}", headers=ADMIN).json()["status"] == "sent",
        timeout_s=3,
    )


def test_run_now_records_a_manual_run_and_keeps_the_schedule(api: httpx.Client) -> None:
    before = job(api, "token-cleanup")
    accepted = api.post("/jobs/token-cleanup/run", headers=ADMIN)
    assert accepted.status_code == 202
    run_id = accepted.json()["run_id"]

    def finished() -> dict[str, Any] | None:
        runs = api.get("/jobs/token-cleanup/runs", headers=ADMIN).json()["items"]
        done = [run for run in runs if run["id"] == run_id and run["finished_at"]]
        return done[0] if done else None

    run = wait_until(finished)
    assert run["manual"] is True
    assert run["outcome"] == "success"
    assert "tokens expired" in run["result"]
    after = job(api, "token-cleanup")
    assert after["next_run_time"] == before["next_run_time"]
    assert after["last_run"]["id"] == run_id
    assert after["recent_runs"][0]["id"] == run_id
    assert api.post("/jobs/nope/run", headers=ADMIN).status_code == 404


def run_finished(api: httpx.Client, job_id: str, run_id: str) -> bool:
    runs = api.get(f"/jobs/{job_id}/runs", headers=ADMIN).json()["items"]
    return any(run["id"] == run_id and run["finished_at"] for run in runs)


def test_runs_across_jobs_filter_by_outcome_and_page(
    api: httpx.Client, deployment: Deployment, tmp_path: Path
) -> None:
    # A report directory that cannot be created makes the daily report fail.
    (tmp_path / "reports").write_text("a file where the folder should be")
    for _ in range(3):  # one after the other: a running job refuses a second start
        run_id: str = api.post("/jobs/daily-report/run", headers=ADMIN).json()["run_id"]
        wait_until(partial(run_finished, api, "daily-report", run_id))
    api.post("/jobs/token-cleanup/run", headers=ADMIN)

    def failed() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = api.get(
            "/runs", params={"outcome": "error"}, headers=ADMIN
        ).json()["items"]
        return items if len(items) == 3 else None

    errors = wait_until(failed)
    assert {run["job_id"] for run in errors} == {"daily-report"}
    assert all(run["error"] for run in errors)

    first = api.get("/runs", params={"limit": 2}, headers=ADMIN).json()
    rest = api.get("/runs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=ADMIN)
    ids = [run["id"] for run in first["items"] + rest.json()["items"]]
    assert len(set(ids)) == 4
    assert rest.json()["next_cursor"] is None


def test_runs_of_a_delivered_reminder_stay_visible(api: httpx.Client) -> None:
    reminder = subscribe(api, delay_s=0.1)
    job_id = f"reminder:{reminder['id']}"

    def finished_runs() -> list[dict[str, Any]]:
        # From the moment it is accepted, a reminder's job id answers 200, runs or not yet.
        response = api.get(f"/jobs/{job_id}/runs", headers=ADMIN)
        assert response.status_code == 200, response.text
        return [run for run in response.json()["items"] if run["finished_at"]]

    runs = wait_until(finished_runs)
    assert runs[0]["outcome"] == "success"
    assert api.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 404  # no longer scheduled
    assert api.get("/jobs/never-existed/runs", headers=ADMIN).status_code == 404


def test_the_openapi_document_has_models_and_examples(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/runs",
        "/jobs/{job_id}/pause",
        "/jobs/{job_id}/resume",
        "/jobs/{job_id}/run",
        "/runs",
    ):
        assert path in paths
    listing = paths["/jobs"]["get"]["responses"]
    assert listing["200"]["content"]["application/json"]["schema"]["$ref"].endswith("JobsPage")
    assert "401" in listing
    assert document["components"]["schemas"]["JobPublic"]["examples"]


def jobs_cli(url: str, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    return subprocess.run(
        [sys.executable, "-m", "scheduler_app", "jobs", *args, "--url", url],
        capture_output=True,
        text=True,
        env={**env, "SCHEDULER_ADMIN_TOKEN": token},
        timeout=30,
        check=False,
    )


def test_the_jobs_command_line_drives_the_api(deployment: Deployment) -> None:
    with live_server(deployment.app()) as url:
        listed = jobs_cli(url, "list")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split() == ["ID", "KIND", "NEXT", "RUN", "(UTC)", "LAST", "RUN", "SCHEDULE"]
        by_id = {row.split()[0]: row for row in rows}
        assert set(by_id) == {"token-cleanup", "daily-report"}
        assert "At 08:00, every day" in by_id["daily-report"]

        items = json.loads(jobs_cli(url, "list", "--kind", "cron", "--json").stdout)["items"]
        # By next run time, then id: which job comes first depends on the time of day (both
        # run at 07:00 UTC in winter, and daily-report then comes first by its id).
        by_next_run = sorted(items, key=lambda item: (item["next_run_time"], item["id"]))
        assert [item["id"] for item in items] == [item["id"] for item in by_next_run]
        assert [row.split()[0] for row in rows] == [item["id"] for item in items]

        assert jobs_cli(url, "pause", "daily-report").stdout.strip() == "daily-report: paused"
        shown = jobs_cli(url, "show", "daily-report")
        assert "next run:       paused" in shown.stdout
        assert "next run" in jobs_cli(url, "resume", "daily-report").stdout
        started = jobs_cli(url, "run", "token-cleanup")
        assert started.returncode == 0
        assert "run " in started.stdout

        refused = jobs_cli(url, "cancel", "daily-report")
        assert refused.returncode == 1
        assert "409" in refused.stderr
        wrong = jobs_cli(url, "list", token="not-the-token")
        assert wrong.returncode == 1
        assert "401" in wrong.stderr
    unreachable = jobs_cli(url, "list")
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr


def test_the_listing_shows_each_jobs_latest_run(api: httpx.Client) -> None:
    def run_now() -> str:
        run_id: str = api.post("/jobs/token-cleanup/run", headers=ADMIN).json()["run_id"]
        wait_until(lambda: job(api, "token-cleanup")["recent_runs"][0]["finished_at"])
        return run_id

    first, latest = run_now(), run_now()
    assert first != latest
    listed = {
        item["id"]: item for item in api.get("/jobs?kind=cron", headers=ADMIN).json()["items"]
    }
    assert listed["token-cleanup"]["last_run"]["id"] == latest
    assert listed["token-cleanup"]["last_run"]["outcome"] == "success"
    assert job(api, "token-cleanup")["last_run"]["id"] == latest
    # Jobs that never ran list no last run.
    assert all(item["last_run"] is None for key, item in listed.items() if key != "token-cleanup")


def test_a_page_is_read_on_the_event_loop_only_on_sqlite_and_without_a_search(
    api: httpx.Client, database_url: str
) -> None:
    # On SQLite a page by index is read on the loop: in a worker thread, every row's step waits
    # for a busy loop to hand the interpreter lock back. A search may scan every job, and a
    # PostgreSQL round trip may stall, so those are read in a worker thread.
    subscribe(api)
    read_on_loop: list[bool] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Only the page's statements: the scheduler and the writer run theirs in other threads.
        if LISTING_FROM in statement:
            read_on_loop.append(_on_an_event_loop())

    def reads(**params: str) -> list[bool]:
        read_on_loop.clear()
        event.listen(Engine, "before_cursor_execute", record)
        try:
            response = api.get("/jobs", params=params, headers=ADMIN)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.text
        assert response.json()["items"]
        return sorted(set(read_on_loop))

    on_sqlite = database_url.startswith("sqlite")
    assert reads() == [on_sqlite]
    assert reads(kind="cron") == [on_sqlite]
    assert reads(q="ada") == [False]


def test_a_sqlite_page_is_read_while_every_pooled_connection_is_in_use(tmp_path: Path) -> None:
    # PostgreSQL pages are read in a worker thread, which waits for the pool like any other.
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}", registry=REGISTRY)
    deployment.write(CRON_JOBS)
    with deployment.client() as client:
        assert client.get("/jobs", headers=ADMIN).status_code == 200
        engine: Engine = client.app_state["runtime"].engine
        pool = cast(QueuePool, engine.pool)
        held = []
        try:
            while pool.checkedout() < POOL_SIZE + MAX_OVERFLOW:
                held.append(engine.connect())
            response = client.get("/jobs", headers=ADMIN)
        finally:
            for connection in held:
                connection.close()
        assert response.status_code == 200, response.text
        assert {item["id"] for item in response.json()["items"]} >= {"daily-report"}


def _on_an_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
