"""The dashboard through the real app: login and its cookie, CSRF, every page, every action
effective and in the audit log, escaping, switched off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, insert, select

from scheduler_app.builtin import REGISTRY
from scheduler_app.db.models import DashboardSession, QuarantinedJob
from scheduler_app.security import hash_token
from tests.support import ADMIN, ADMIN_TOKEN, Deployment, reminder_task

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


def test_login_attempts_are_limited_per_client(client: TestClient) -> None:
    answers = [
        client.post("/dashboard/login", data={"token": "guess"}).status_code for _ in range(11)
    ]
    assert answers[:10] == [401] * 10
    assert answers[10] == 429


def test_switched_off_dashboard_answers_404(deployment: Deployment) -> None:
    deployment.overrides["dashboard"] = {"enabled": False}
    with deployment.client() as client:
        assert client.get("/dashboard/login").status_code == 404
        assert client.get("/dashboard", follow_redirects=False).status_code == 404
        assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 404
