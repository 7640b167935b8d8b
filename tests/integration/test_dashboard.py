"""The dashboard through the real app: login and its cookie, CSRF, every page, every action
effective and in the audit log, escaping, switched off."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.orm import Session

from scheduler_app.builtin import REGISTRY
from scheduler_app.db.models import DashboardSession, QuarantinedJob
from scheduler_app.security import hash_token
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    Deployment,
    SmtpSink,
    app_with_retrying_jobs,
    finished_task,
    reminder_task,
    reminder_waiting_for_its_retry,
    show_task,
    wait_for_status,
    wait_until,
)

CRON_JOBS: list[dict[str, Any]] = [
    {
        "id": "daily-report",
        "job": "daily_report",
        "cron": "0 8 * * *",
        "timezone": "Europe/Berlin",
        "description": "Summary <script>alert(1)</script> of the day",
    },
]
PAGES = [
    "",
    "/jobs",
    "/jobs/daily-report",
    "/tasks",
    "/failed",
    "/quarantined",
    "/config",
    "/audit",
]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FLASH = re.compile(r'<p class="flash (\w+)" role="status">([^<]*)</p>')
# The confirm step's form (the page's other form logs out).
FORM = re.compile(r'<form method="post" action="([^"]+/actions/[^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
# Your own jobs, for tasks: one whose automatic retry waits an hour, one that always fails.


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Deployment:
    deployment = Deployment(tmp_path, database_url, registry=REGISTRY)
    deployment.write(CRON_JOBS)
    return deployment


@pytest.fixture
def client(deployment: Deployment) -> Iterator[TestClient]:
    with deployment.client() as client:
        yield client


def log_in(client: TestClient) -> str:
    """Log in; the session's CSRF token."""
    response = client.post("/dashboard/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 200, response.text
    found = CSRF.search(response.text)
    assert found is not None
    return found.group(1)


def act(client: TestClient, csrf: str, action: str, **fields: str) -> tuple[str, str]:
    """Post an action as its confirm step does; the flash message shown after the redirect."""
    response = client.post(
        f"/dashboard/actions/{action}",
        data={"csrf_token": csrf, "next": "/dashboard/jobs", **fields},
    )
    assert response.status_code == 200, response.text
    flash = FLASH.search(response.text)
    assert flash is not None, response.text
    return flash.group(1), flash.group(2)


def offered(page: str, action: str, target: str | None = None) -> str:
    """The confirm step's address of the action the page offers (on target); fails if none."""
    for link in re.findall(r'href="(/dashboard/confirm\?[^"]+)"', page):
        href = html.unescape(link)
        if f"action={action}&" in href and (target is None or f"target={target}&" in href):
            return href
    pytest.fail(f"the page offers no {action} on {target}")


def confirm_and_post(client: TestClient, page: str, action: str, target: str | None = None) -> Any:
    """Open the action's confirm step from the page and submit its form as a browser would;
    the flash message (kind, text) shown after the redirect."""
    confirm = client.get(offered(page, action, target))
    assert confirm.status_code == 200, confirm.text
    form = FORM.search(confirm.text)
    assert form is not None, confirm.text
    fields = {name: html.unescape(value) for name, value in HIDDEN.findall(form.group(2))}
    assert fields["csrf_token"]
    response = client.post(html.unescape(form.group(1)), data=fields)
    assert response.status_code == 200, response.text
    flash = FLASH.search(response.text)
    assert flash is not None, response.text
    return flash.group(1), html.unescape(flash.group(2))


def audit_entries(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/admin/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_pages_need_a_login_and_actions_a_csrf_token(client: TestClient) -> None:
    for page in PAGES:
        response = client.get(f"/dashboard{page}", follow_redirects=False)
        assert response.status_code == 303, page
        assert response.headers["location"] == "/dashboard/login"
    assert client.post("/dashboard/actions/pause_job", data={"target": "x"}).status_code == 403

    csrf = log_in(client)
    forged = client.post(
        "/dashboard/actions/pause_job", data={"csrf_token": "forged", "target": "daily-report"}
    )
    assert forged.status_code == 403
    assert client.get("/jobs/daily-report", headers=ADMIN).json()["paused"] is False
    assert client.post("/dashboard/logout", data={}).status_code == 403
    assert csrf


def test_login_sets_a_strict_http_only_cookie_and_stores_only_its_hash(
    client: TestClient, database_url: str
) -> None:
    wrong = client.post("/dashboard/login", data={"token": "not-the-token"})
    assert wrong.status_code == 401
    assert "That is not the admin token." in wrong.text
    assert 'name="token"' in wrong.text

    response = client.post("/dashboard/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    value = re.match(r"dashboard_session=([^;]+);", cookie)
    assert value is not None
    assert ADMIN_TOKEN not in cookie

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            hashes = connection.scalars(select(DashboardSession.token_hash)).all()
    finally:
        engine.dispose()
    assert hashes == [hash_token(value.group(1))]


def test_every_page_renders_its_content(client: TestClient, deployment: Deployment) -> None:
    log_in(client)
    expected = {
        "": ["Fire lag, last 24 hours", "Leader", "daily-report"],
        "/jobs": ["daily-report", "At 08:00, every day", "Europe/Berlin"],
        "/jobs/daily-report": ["Next five fires", "Run history", "CET"],
        "/tasks": ["Tasks and reminders"],
        "/tasks?what=tasks": ["Tasks and reminders"],
        "/failed": ["Failed reminders", "Failed tasks"],
        "/quarantined": ["No quarantined jobs."],
        "/config": ["No changes"],
        "/audit": ["login", "dashboard login from"],
    }
    for page, texts in expected.items():
        response = client.get(f"/dashboard{page}")
        assert response.status_code == 200, page
        assert response.headers["content-type"].startswith("text/html")
        for text in texts:
            assert text in response.text, (page, text)

    # A fragment is the live part only, for the page's refresh.
    fragment = client.get("/dashboard/jobs", headers={"X-Dashboard-Fragment": "1"})
    assert "<html" not in fragment.text
    assert "daily-report" in fragment.text

    # The config page shows the plan of a reload as a diff, without applying it.
    deployment.write([*CRON_JOBS, {"id": "hourly", "job": "daily_report", "cron": "0 * * * *"}])
    config = client.get("/dashboard/config").text
    assert "+ add" in config
    assert "hourly" in config
    assert client.get("/jobs/hourly", headers=ADMIN).status_code == 404


def test_text_from_the_data_is_escaped(client: TestClient) -> None:
    log_in(client)
    for page in ("/jobs", "/jobs/daily-report", ""):
        text = client.get(f"/dashboard{page}").text
        assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/dashboard/jobs").text


def test_pause_resume_run_and_reload_take_effect_and_are_audited(
    client: TestClient, deployment: Deployment
) -> None:
    csrf = log_in(client)

    assert act(client, csrf, "pause_job", target="daily-report") == (
        "ok",
        "Paused daily-report.",
    )
    assert client.get("/jobs/daily-report", headers=ADMIN).json()["paused"] is True
    kind, text = act(client, csrf, "resume_job", target="daily-report")
    assert kind == "ok"
    assert text.startswith("Resumed daily-report")
    assert client.get("/jobs/daily-report", headers=ADMIN).json()["paused"] is False

    kind, text = act(client, csrf, "run_job", target="daily-report")
    assert kind == "ok"
    assert text.startswith("Started a run of daily-report")

    kind, text = act(client, csrf, "cancel_job", target="daily-report")
    assert kind == "error"
    assert "declared in config.yaml" in text

    deployment.write([*CRON_JOBS, {"id": "hourly", "job": "daily_report", "cron": "0 * * * *"}])
    assert act(client, csrf, "reload_configuration") == (
        "ok",
        "Configuration reloaded: 1 added, 0 changed, 0 removed.",
    )
    assert client.get("/jobs/hourly", headers=ADMIN).status_code == 200

    audit = client.get("/dashboard/audit").text
    for action in ("pause_job", "resume_job", "run_job", "cancel_job", "reload_configuration"):
        assert f"<td>{action}</td>" in audit, action
    assert "declared in config.yaml" in audit  # the refused cancel, with its reason


def test_retry_failed_reminder_one_and_all_matching(
    client: TestClient, deployment: Deployment
) -> None:
    now = datetime.now(UTC)
    engine = create_engine(deployment.overrides["database_url"])
    failed = [
        reminder_task(
            id=f"00000000-0000-4000-8000-00000000000{n}",
            status="failed",
            attempts=3,
            remind_at=now - timedelta(hours=1),
            created_at=now - timedelta(hours=2),
            finished_at=now - timedelta(minutes=30),
            last_error="SMTP 550 <b>mailbox</b> unavailable",
        )
        for n in range(3)
    ]
    try:
        from sqlalchemy.orm import Session

        with Session(engine, expire_on_commit=False) as session:
            session.add_all(failed)
            session.commit()
    finally:
        engine.dispose()
    csrf = log_in(client)

    page = client.get("/dashboard/failed").text
    assert "&lt;b&gt;mailbox&lt;/b&gt;" in page
    assert failed[0].id in page

    kind, text = act(client, csrf, "retry_reminder", target=failed[0].id)
    assert kind == "ok", text
    status = client.get(f"/reminders/{failed[0].id}", headers=ADMIN).json()["status"]
    assert status in ("scheduled", "sent", "failed")  # requeued; it may have run since

    kind, text = act(client, csrf, "retry_reminders", status="failed", email="ada@example.com")
    assert kind == "ok"
    assert text.startswith("Retried ")

    assert act(client, csrf, "retry_tasks", status="failed") == ("ok", "Retried 0 task(s).")

    audit = client.get("/dashboard/audit?action=retry_reminder").text
    assert failed[0].id in audit


def test_restore_a_quarantined_job(client: TestClient, deployment: Deployment) -> None:
    engine = create_engine(deployment.overrides["database_url"])
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(QuarantinedJob).values(
                    id="broken-job",
                    next_run_time=None,
                    job_state=b"not a pickle",
                    error="cannot restore",
                    quarantined_at=datetime.now(UTC),
                )
            )
    finally:
        engine.dispose()
    csrf = log_in(client)
    assert "broken-job" in client.get("/dashboard/quarantined").text
    assert act(client, csrf, "restore_quarantined_job", target="broken-job") == (
        "ok",
        "Restored broken-job.",
    )
    kind, text = act(client, csrf, "restore_quarantined_job", target="broken-job")
    assert kind == "error"
    assert "no quarantined job" in text


def test_confirm_step_and_logout(client: TestClient, database_url: str) -> None:
    log_in(client)
    jobs = client.get("/dashboard/jobs").text
    link = re.search(
        r'href="(/dashboard/confirm\?action=pause_job&amp;target=daily-report[^"]*)"', jobs
    )
    assert link is not None
    confirm = client.get(link.group(1).replace("&amp;", "&"))
    assert "Pause job daily-report?" in confirm.text
    assert 'action="/dashboard/actions/pause_job"' in confirm.text
    # Going back only to the dashboard's own pages.
    outside = client.get("/dashboard/confirm?action=pause_job&target=x&next=https://evil.example/")
    assert 'name="next" value="/dashboard"' in outside.text

    csrf = CSRF.search(confirm.text)
    assert csrf is not None
    response = client.post("/dashboard/logout", data={"csrf_token": csrf.group(1)})
    assert response.status_code == 200
    assert "Logged out." in response.text
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(DashboardSession)) == 0
    finally:
        engine.dispose()


def test_only_wrong_tokens_count_toward_the_login_limit(client: TestClient) -> None:
    # Eleven good logins in a minute (more than the limit of ten) are all let in.
    good = [
        client.post("/dashboard/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
        for _ in range(11)
    ]
    assert [response.status_code for response in good] == [303] * 11

    answers = [
        client.post("/dashboard/login", data={"token": "guess"}).status_code for _ in range(11)
    ]
    assert answers[:10] == [401] * 10
    assert answers[10] == 429
    # Once limited, the right token waits too: an answer must not tell a guess apart.
    limited = client.post("/dashboard/login", data={"token": ADMIN_TOKEN})
    assert limited.status_code == 429
    assert "try again in" in limited.text


def test_switched_off_dashboard_answers_404(deployment: Deployment) -> None:
    deployment.overrides["dashboard"] = {"enabled": False}
    with deployment.client() as client:
        assert client.get("/dashboard/login").status_code == 404
        assert client.get("/dashboard", follow_redirects=False).status_code == 404
        assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 404


def test_schedules_in_words_come_from_the_jobs_cron_and_timezone(deployment: Deployment) -> None:
    weekdays = {
        "id": "weekday-report",
        "job": "daily_report",
        "cron": "30 9 * * 1-5",
        "timezone": "Asia/Kolkata",
        "description": "Weekdays in India",
    }
    deployment.write([*CRON_JOBS, weekdays])
    with deployment.client() as client:
        reminder = client.post(
            "/subscribe", json={"email": "ada@example.com", "delay_seconds": 3600}
        ).json()
        job = client.get("/jobs/weekday-report", headers=ADMIN).json()
        assert (job["cron"], job["timezone"]) == ("30 9 * * 1-5", "Asia/Kolkata")
        log_in(client)

        jobs = client.get("/dashboard/jobs").text
        assert "At 09:30, Monday through Friday <small>(Asia/Kolkata)</small>" in jobs
        assert "At 08:00, every day <small>(Europe/Berlin)</small>" in jobs
        # A reminder has no cron fields: its schedule is the service's text.
        assert f"Once, at {reminder['remind_at'][:19]}Z" in jobs

        page = client.get("/dashboard/jobs/weekday-report").text
        assert "<dd>At 09:30, Monday through Friday</dd>" in page
        assert "<th>Asia/Kolkata</th>" in page
        assert "IST (UTC+0530)" in page  # the next fires in the job's own zone


def test_resign_leadership_from_the_overview(client: TestClient) -> None:
    log_in(client)
    before = client.get("/admin/cluster", headers=ADMIN).json()["leader"]
    assert before is not None

    overview = client.get("/dashboard").text
    kind, text = confirm_and_post(client, overview, "resign_leadership")
    assert (kind, text) == (
        "ok",
        f"Asked leader {before['id']} (term {before['term']}) to step down.",
    )

    # The lease was given up: nobody leads, or a new term has begun since.
    after = client.get("/admin/cluster", headers=ADMIN).json()["leader"]
    assert after is None or after["term"] > before["term"]
    (entry,) = audit_entries(client, action="resign_leadership")
    assert (entry["source"], entry["outcome"], entry["target"]) == ("dashboard", "ok", None)
    assert entry["actor"].startswith("dashboard login from ")
    assert entry["detail"] == text


@pytest.fixture
def user_jobs(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, str]]:
    with app_with_retrying_jobs(tmp_path, database_url) as running:
        yield running


def test_retry_one_failed_task_of_your_job(user_jobs: tuple[TestClient, str]) -> None:
    client, tag = user_jobs
    job = f"always_fails_{tag}"
    task_id = client.post("/tasks", json={"job": job, "args": {}}, headers=ADMIN).json()["id"]
    assert wait_until(partial(finished_task, client, task_id))["status"] == "failed"
    log_in(client)

    failed = client.get("/dashboard/failed", params={"job": job}).text
    kind, text = confirm_and_post(client, failed, "retry_task", task_id)
    assert (kind, text) == ("ok", f"Task {task_id} is scheduled again, to run now.")

    # Run again (and failed again, a fresh series of one attempt): a second run on record.
    def two_runs() -> list[Any] | None:
        runs: list[Any] = client.get(f"/jobs/task:{task_id}/runs", headers=ADMIN).json()["items"]
        return runs if len(runs) == 2 and all(run["finished_at"] for run in runs) else None

    assert [run["outcome"] for run in wait_until(two_runs)] == ["error", "error"]
    again = wait_until(partial(finished_task, client, task_id))
    assert (again["status"], again["attempts"]) == ("failed", 1)
    (entry,) = audit_entries(client, action="retry_task", target=task_id)
    assert (entry["source"], entry["outcome"]) == ("dashboard", "ok")


def test_retry_now_runs_a_task_waiting_for_its_automatic_retry(
    user_jobs: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, tag = user_jobs
    job = f"fails_once_{tag}"
    body = {"job": job, "args": {"path": str(tmp_path / "marker")}}
    task_id = client.post("/tasks", json=body, headers=ADMIN).json()["id"]
    waiting = wait_until(
        lambda: (
            (shown := show_task(client, task_id))["attempts"] == 1
            and shown["status"] == "scheduled"
            and shown
        )
    )
    next_attempt = datetime.fromisoformat(waiting["next_attempt_at"])
    # About an hour away (jittered): only retry now runs it within this test.
    assert next_attempt > datetime.now(UTC) + timedelta(minutes=10)
    # Its job is listed as a task's: no cron fields.
    listed = client.get(f"/jobs/task:{task_id}", headers=ADMIN).json()
    assert (listed["kind"], listed["cron"], listed["timezone"]) == ("task", None, None)
    log_in(client)

    tasks = client.get("/dashboard/tasks", params={"what": "tasks", "job": job}).text
    assert "Retry now" in tasks
    kind, text = confirm_and_post(client, tasks, "retry_task", task_id)
    assert (kind, text) == ("ok", f"Task {task_id} is scheduled again, to run now.")

    # Run at once, not in an hour: its second attempt succeeds.
    done = wait_until(partial(finished_task, client, task_id))
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    (entry,) = audit_entries(client, action="retry_task", target=task_id)
    assert (entry["source"], entry["outcome"]) == ("dashboard", "ok")
    # Nothing waits any more: the page no longer offers a retry of it.
    after = client.get("/dashboard/tasks", params={"id": task_id}).text
    assert task_id in after
    assert f"action=retry_task&amp;target={task_id}&amp;" not in after


def test_retry_now_sends_a_reminder_waiting_for_its_automatic_retry(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    with reminder_waiting_for_its_retry(tmp_path, database_url, smtp_sink) as (client, reminder_id):
        log_in(client)
        tasks = client.get("/dashboard/tasks", params={"status": "scheduled"}).text
        assert "Retry now" in tasks
        kind, text = confirm_and_post(client, tasks, "retry_reminder", reminder_id)
        assert (kind, text) == ("ok", f"Reminder {reminder_id} is scheduled again, to be sent now.")

        assert wait_for_status(client, reminder_id, "sent")["attempts"] == 2
        (entry,) = audit_entries(client, action="retry_reminder", target=reminder_id)
        assert (entry["source"], entry["outcome"]) == ("dashboard", "ok")


def test_the_error_filter_of_the_failed_page_is_the_one_retry_all_uses(
    client: TestClient, deployment: Deployment
) -> None:
    now = datetime.now(UTC)
    # More recent failures than a page holds, none matching; the one that matches is older.
    rows = [
        reminder_task(
            id=f"00000000-0000-4000-8000-{n:012d}",
            status="failed",
            attempts=3,
            remind_at=now - timedelta(hours=1),
            created_at=now - timedelta(hours=2),
            finished_at=now - timedelta(minutes=n),
            last_error="timed out" if n < 30 else "SMTP 550 mailbox unavailable",
        )
        for n in range(31)
    ]
    matching = rows[-1].id
    engine = create_engine(deployment.overrides["database_url"])
    try:
        with Session(engine) as session:
            session.add_all(rows)
            session.commit()
    finally:
        engine.dispose()
    csrf = log_in(client)

    page = client.get("/dashboard/failed", params={"error_contains": "mailbox UNAVAILABLE"}).text
    assert matching in page
    assert "timed out" not in page
    assert "Next page" not in page
    everything = client.get("/dashboard/failed").text
    assert "Next page" in everything  # unfiltered, the failures fill more than one page

    # "Retry all matching" with the page's filter retries exactly what the page listed.
    href = offered(page, "retry_reminders")
    assert "error_contains=mailbox+UNAVAILABLE" in href
    kind, text = act(
        client, csrf, "retry_reminders", status="failed", error_contains="mailbox UNAVAILABLE"
    )
    assert (kind, text) == ("ok", "Retried 1 reminder(s).")
    assert client.get(f"/reminders/{matching}", headers=ADMIN).json()["status"] != "failed"
