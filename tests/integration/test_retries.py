"""Failed deliveries: retried with backoff when transient, failed at once when permanent,
listed and re-queued by an operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from scheduler_app.app import create_app
from scheduler_app.db.models import JobRun, RunOutcome
from scheduler_app.runtime import Runtime
from tests.support import (
    ADMIN,
    SmtpSink,
    free_port,
    make_settings,
    reminder_ids,
    smtp_mail,
    wait_for_status,
    wait_until,
)

FAST_RETRIES = {"max_attempts": 3, "retry_base_s": 0.1, "retry_max_s": 0.3}


def client_for(tmp_path: Path, database_url: str, host: str, port: int) -> TestClient:
    settings = make_settings(
        tmp_path, database_url, mail=smtp_mail(host, port, timeout_s=2), reminders=FAST_RETRIES
    )
    return TestClient(create_app(settings))


def subscribe(client: TestClient, **fields: Any) -> str:
    body = {"email": "ada@example.com", "delay_seconds": 0.1, **fields}
    response = client.post("/subscribe", json=body)
    assert response.status_code == 201, response.text
    reminder_id: str = response.json()["id"]
    return reminder_id


def runs(client: TestClient, reminder_id: str) -> list[JobRun]:
    """The reminder's run records once each has its outcome: a run's end is written just after
    the delivery has recorded its own, without the delivery waiting for it."""
    runtime: Runtime = client.app_state["runtime"]

    def finished() -> list[JobRun] | None:
        with runtime.sessions() as session:
            query = select(JobRun).where(JobRun.job_id == f"reminder:{reminder_id}")
            found = list(session.scalars(query.order_by(JobRun.started_at)))
        return None if any(run.outcome == RunOutcome.RUNNING for run in found) else found

    return wait_until(finished)


def test_a_transient_failure_is_retried_until_it_succeeds(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    smtp_sink.replies = ["451 4.3.0 try again later", "421 4.7.0 busy"]
    with client_for(tmp_path, database_url, smtp_sink.host, smtp_sink.port) as client:
        reminder_id = subscribe(client)
        shown = wait_for_status(client, reminder_id, "sent")
        attempts = runs(client, reminder_id)

    assert shown["attempts"] == 3
    assert shown["last_error"] is None  # the earlier attempts' error no longer applies
    assert [run.outcome for run in attempts] == ["error", "error", "success"]
    assert "451" in (attempts[0].error or "")
    assert "next attempt at" in (attempts[0].error or "")
    assert reminder_ids(smtp_sink.received()) == [reminder_id]


def test_a_permanent_failure_fails_at_once(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    smtp_sink.replies = ["550 5.1.1 no such mailbox"]
    with client_for(tmp_path, database_url, smtp_sink.host, smtp_sink.port) as client:
        reminder_id = subscribe(client)
        shown = wait_for_status(client, reminder_id, "failed")
        attempts = runs(client, reminder_id)
    assert shown["attempts"] == 1
    assert shown["last_error"].startswith("permanent error: SMTPDataError")
    assert "550" in shown["last_error"]
    assert [run.outcome for run in attempts] == ["error"]


def test_a_cancel_token_holder_sees_what_failed_without_the_mail_servers_detail(
    tmp_path: Path, database_url: str
) -> None:
    unreachable = free_port()
    with client_for(tmp_path, database_url, "127.0.0.1", unreachable) as client:
        created = client.post("/subscribe", json={"email": "ada@example.com", "delay_seconds": 0.1})
        reminder_id = created.json()["id"]
        admin_view = wait_for_status(client, reminder_id, "failed")
        own = {"Authorization": f"Bearer {created.json()['cancel_token']}"}
        holder_view = client.get(f"/reminders/{reminder_id}", headers=own).json()
    assert f"port {unreachable}" in admin_view["last_error"]
    assert holder_view["last_error"] == "gave up after 3 attempts: SMTPConnectError"
    assert {**holder_view, "last_error": None} == {**admin_view, "last_error": None}


def test_after_the_last_attempt_it_is_failed_and_an_operator_can_retry(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    unreachable = free_port()
    with client_for(tmp_path, database_url, "127.0.0.1", unreachable) as client:
        first = subscribe(client)
        second = subscribe(client, email="bob@example.com")
        for reminder_id in (first, second):
            shown = wait_for_status(client, reminder_id, "failed")
            assert shown["attempts"] == 3
            assert shown["last_error"].startswith("gave up after 3 attempts: SMTPConnect")
            assert shown["next_attempt_at"] is None
        listed = client.get("/reminders", params={"status": "failed"}, headers=ADMIN).json()
        assert {item["id"] for item in listed["items"]} == {first, second}
        assert client.get("/reminders", params={"status": "failed"}).status_code == 401

    # The mail server is back: one reminder by id, the other by filter.
    with client_for(tmp_path, database_url, smtp_sink.host, smtp_sink.port) as client:
        retried = client.post(f"/reminders/{first}/retry", headers=ADMIN)
        assert retried.status_code == 200
        assert retried.json()["status"] == "scheduled"
        assert retried.json()["attempts"] == 0
        wait_for_status(client, first, "sent")
        again = client.post(f"/reminders/{first}/retry", headers=ADMIN)
        assert again.status_code == 409

        matched = client.post(
            "/reminders/retry",
            json={"status": "failed", "error_contains": "smtpconnect"},
            headers=ADMIN,
        )
        assert matched.json() == {"requeued": [second]}
        wait_for_status(client, second, "sent")
        assert client.post("/reminders/retry", json={}, headers=ADMIN).json() == {"requeued": []}
        assert client.post(f"/reminders/{second}/retry").status_code == 401
    assert sorted(reminder_ids(smtp_sink.received())) == sorted([first, second])


def test_a_reminder_being_delivered_cannot_be_run_again_meanwhile(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    smtp_sink.delay_s = 1.0
    with client_for(tmp_path, database_url, smtp_sink.host, smtp_sink.port) as client:
        reminder_id = subscribe(client, delay_seconds=3600)
        job_url = f"/jobs/reminder:{reminder_id}/run"
        assert client.post(job_url, headers=ADMIN).status_code == 202
        busy = client.post(job_url, headers=ADMIN)
        assert busy.status_code == 409
        assert "running now" in busy.json()["detail"]
        wait_for_status(client, reminder_id, "sent")
    assert reminder_ids(smtp_sink.received()) == [reminder_id]
