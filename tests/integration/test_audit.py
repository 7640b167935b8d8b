"""The audit log: operator actions through the API and the command line, with their results;
"retry now" for work waiting for its automatic retry; retrying every failed task of a job."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from scheduler_app.builtin import REGISTRY
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    Deployment,
    SmtpSink,
    app_with_retrying_jobs,
    finished_task,
    live_server,
    reminder_waiting_for_its_retry,
    show_task,
    wait_for_status,
    wait_until,
)

CRON_JOBS = [{"id": "token-cleanup", "job": "token_cleanup", "cron": "*/15 * * * *"}]


def entries(client: TestClient | httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/admin/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Deployment:
    deployment = Deployment(tmp_path, database_url, registry=REGISTRY)
    deployment.write(CRON_JOBS)
    return deployment


def test_api_actions_are_recorded_with_who_what_and_the_result(deployment: Deployment) -> None:
    with deployment.client() as client:
        assert client.post("/jobs/token-cleanup/pause", headers=ADMIN).status_code == 200
        assert client.post("/jobs/nope/pause", headers=ADMIN).status_code == 404
        assert client.post("/jobs/token-cleanup/resume", headers=ADMIN).status_code == 200
        reloaded = client.post("/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200
        # Reading is not an action; an unauthenticated attempt is refused before it is one.
        client.get("/jobs", headers=ADMIN)
        assert client.post("/jobs/token-cleanup/pause").status_code == 401

        listed = entries(client)
        assert [(e["action"], e["target"], e["outcome"]) for e in listed] == [
            ("reload_configuration", None, "ok"),
            ("resume_job", "token-cleanup", "ok"),
            ("pause_job", "nope", "error"),
            ("pause_job", "token-cleanup", "ok"),
        ]
        assert all(e["source"] == "api" for e in listed)
        assert listed[0]["actor"].startswith("admin token from ")
        assert ADMIN_TOKEN not in str(listed)
        assert listed[0]["detail"] == reloaded.text.replace(" ", "")
        assert "no scheduled job" in listed[2]["detail"]

        only = entries(client, action="pause_job", target="token-cleanup")
        assert [e["id"] for e in only] == [listed[3]["id"]]
        assert client.get("/admin/audit").status_code == 401
        bad = client.get("/admin/audit", params={"cursor": "x"}, headers=ADMIN)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_the_audit_list_pages_newest_first(deployment: Deployment) -> None:
    with deployment.client() as client:
        for _ in range(5):
            client.post("/jobs/token-cleanup/pause", headers=ADMIN)
        first = client.get("/admin/audit", params={"limit": 2}, headers=ADMIN).json()
        seen = [item["id"] for item in first["items"]]
        cursor = first["next_cursor"]
        while cursor:
            page = client.get(
                "/admin/audit", params={"limit": 2, "cursor": cursor}, headers=ADMIN
            ).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)


def test_command_line_actions_are_recorded_as_the_command_lines(deployment: Deployment) -> None:
    with live_server(deployment.app()) as url:
        env = {
            **os.environ,
            "SCHEDULER_URL": url,
            "SCHEDULER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        cli = [sys.executable, "-m", "scheduler_app", "jobs"]
        done = subprocess.run(
            [*cli, "pause", "token-cleanup"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        with httpx.Client(base_url=url, timeout=10) as client:
            listed = entries(client)
    assert [(e["source"], e["action"], e["target"]) for e in listed] == [
        ("cli", "pause_job", "token-cleanup")
    ]


@pytest.fixture
def user_jobs(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, str]]:
    with app_with_retrying_jobs(tmp_path, database_url) as running:
        yield running


def test_retry_now_runs_a_task_waiting_for_its_automatic_retry(
    user_jobs: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, tag = user_jobs
    body = {"job": f"fails_once_{tag}", "args": {"path": str(tmp_path / "marker")}}
    task_id = client.post("/tasks", json=body, headers=ADMIN).json()["id"]
    waiting = wait_until(
        lambda: (
            (shown := show_task(client, task_id))["attempts"] == 1
            and shown["status"] == "scheduled"
            and shown
        )
    )
    assert waiting["next_attempt_at"] is not None
    assert waiting["last_error"] is not None

    retried = client.post(f"/tasks/{task_id}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert retried.json()["attempts"] == 1  # the same series of attempts, its next one now
    done = wait_until(partial(finished_task, client, task_id))
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    # Nothing left to retry: a succeeded task answers 409, and that is recorded too.
    assert client.post(f"/tasks/{task_id}/retry", headers=ADMIN).status_code == 409
    assert [(e["action"], e["outcome"]) for e in entries(client, target=task_id)] == [
        ("retry_task", "error"),
        ("retry_task", "ok"),
    ]


def test_every_failed_task_of_a_job_is_retried_at_once(
    user_jobs: tuple[TestClient, str],
) -> None:
    client, tag = user_jobs
    job = f"always_fails_{tag}"
    ids = [client.post("/tasks", json={"job": job, "args": {}}, headers=ADMIN).json()["id"]]
    ids.append(client.post("/tasks", json={"job": job, "args": {}}, headers=ADMIN).json()["id"])
    for task_id in ids:
        assert wait_until(partial(finished_task, client, task_id))["status"] == "failed"

    retried = client.post("/tasks/retry", json={"job": job}, headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert sorted(retried.json()["requeued"]) == sorted(ids)
    for task_id in ids:
        # Requeued before the answer (finished_at cleared), failed again since.
        again = wait_until(partial(finished_task, client, task_id))
        assert (again["status"], again["attempts"]) == ("failed", 1)
    assert client.post(
        "/tasks/retry", json={"job": job, "status": "running"}, headers=ADMIN
    ).json()["detail"][0]["loc"] == ["body", "status"]
    (entry,) = entries(client, action="retry_tasks")
    assert (entry["target"], entry["detail"]) == (job, "2 failed task(s) retried")


def test_retry_now_delivers_a_reminder_waiting_for_its_automatic_retry(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    with reminder_waiting_for_its_retry(tmp_path, database_url, smtp_sink) as (client, reminder_id):
        retried = client.post(f"/reminders/{reminder_id}/retry", headers=ADMIN)
        assert retried.status_code == 200, retried.text
        shown = wait_for_status(client, reminder_id, "sent")
        assert shown["attempts"] == 2
        (entry,) = entries(client, action="retry_reminder")
    assert (entry["target"], entry["outcome"]) == (reminder_id, "ok")
