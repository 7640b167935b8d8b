"""Reminders delivered by the running scheduler, through real mail backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler_app.app import create_app
from scheduler_app.settings import Settings
from tests.support import (
    ADMIN,
    SmtpSink,
    free_port,
    make_settings,
    outbox_messages,
    show_reminder,
    smtp_mail,
    wait_for_status,
    wait_until,
)


def subscribe(client: TestClient, delay_s: float | None = 0.2, **fields: Any) -> str:
    body = {"email": "ada@example.com", "delay_seconds": delay_s, **fields}
    response = client.post("/subscribe", json=body)
    assert response.status_code == 201, response.text
    reminder_id: str = response.json()["id"]
    return reminder_id


def test_a_due_reminder_lands_in_the_outbox_once(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        reminder_id = subscribe(client, subject="Stretch", message="Stand up and stretch.")
        shown = wait_for_status(client, reminder_id, "sent")

    assert shown["attempts"] == 1
    assert datetime.fromisoformat(shown["sent_at"]) >= datetime.fromisoformat(shown["remind_at"])
    [message] = outbox_messages(settings.mail.outbox_dir)
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Tests <tests@example.com>"
    assert message["Subject"] == "Stretch"
    assert message["Message-ID"] == f"<reminder-{reminder_id}@example.com>"
    assert message["X-Reminder-Id"] == reminder_id
    assert message.get_payload(decode=True).decode().strip() == "Stand up and stretch."  # type: ignore[union-attr]


def test_smtp_delivery_reaches_a_real_server(
    tmp_path: Path, database_url: str, smtp_sink: SmtpSink
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        mail=smtp_mail(smtp_sink.host, smtp_sink.port, timeout_s=5),
    )
    with TestClient(create_app(settings)) as client:
        ids = [subscribe(client, email=f"user{n}@example.com") for n in range(3)]
        for reminder_id in ids:
            wait_for_status(client, reminder_id, "sent")

    received = {str(message["X-Reminder-Id"]): message for message in smtp_sink.received()}
    assert sorted(received) == sorted(ids)
    assert len(smtp_sink.received()) == 3
    for reminder_id, message in received.items():
        assert message["Message-ID"] == f"<reminder-{reminder_id}@example.com>"
    assert not outbox_messages(settings.mail.outbox_dir)


def test_an_unreachable_smtp_server_marks_the_reminder_failed(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        mail=smtp_mail("127.0.0.1", free_port(), timeout_s=2),
        reminders={"max_attempts": 2, "retry_base_s": 0.1},
    )
    with TestClient(create_app(settings)) as client:
        reminder_id = subscribe(client)
        shown = wait_for_status(client, reminder_id, "failed")
    assert shown["attempts"] == 2
    assert shown["last_error"].startswith("gave up after 2 attempts: SMTPConnect")


def test_a_cancelled_reminder_is_never_sent(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        cancelled = subscribe(client, delay_s=0.5)
        kept = subscribe(client, delay_s=0.6)
        assert client.delete(f"/reminders/{cancelled}", headers=ADMIN).status_code == 200
        wait_for_status(client, kept, "sent")
        assert show_reminder(client, cancelled)["status"] == "cancelled"
        gone = client.delete(f"/reminders/{kept}", headers=ADMIN)
        assert gone.status_code == 409
        assert "already sent" in gone.json()["detail"]

    ids = [str(message["X-Reminder-Id"]) for message in outbox_messages(settings.mail.outbox_dir)]
    assert ids == [kept]


def test_reminders_due_together_are_each_sent_once(settings: Settings) -> None:
    due = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()  # after all 40 are posted
    with TestClient(create_app(settings)) as client:
        ids = [
            subscribe(client, delay_s=None, remind_at=due, email=f"u{n}@example.com")
            for n in range(40)
        ]
        for reminder_id in ids:
            wait_for_status(client, reminder_id, "sent")
    delivered = [str(m["X-Reminder-Id"]) for m in outbox_messages(settings.mail.outbox_dir)]
    assert sorted(delivered) == sorted(ids)


def test_a_reminder_due_before_the_planned_wakeup_is_not_kept_waiting(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        later = subscribe(client, delay_s=3600)
        soon = subscribe(client, delay_s=0.3)
        sent = wait_for_status(client, soon, "sent", timeout_s=5)
        assert show_reminder(client, later)["status"] == "scheduled"
    lag = datetime.fromisoformat(sent["sent_at"]) - datetime.fromisoformat(sent["remind_at"])
    assert lag < timedelta(seconds=2)


@pytest.mark.parametrize("enabled", [False])
def test_with_the_scheduler_disabled_reminders_are_stored_but_not_run(
    tmp_path: Path, database_url: str, enabled: bool
) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"enabled": enabled})
    with TestClient(create_app(settings)) as client:
        reminder_id = subscribe(client, delay_s=0.1)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["scheduler"] == "disabled in this process"
        wait_until(
            lambda: (
                datetime.now(UTC)
                > datetime.fromisoformat(show_reminder(client, reminder_id)["remind_at"])
                + timedelta(seconds=0.3)
            )
        )
        assert show_reminder(client, reminder_id)["status"] == "scheduled"

    # The next process that runs the scheduler delivers it.
    with TestClient(create_app(make_settings(tmp_path, database_url))) as client:
        wait_for_status(client, reminder_id, "sent")
