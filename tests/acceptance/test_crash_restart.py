"""Crash and restart of the real service process: no reminder is lost, none is sent twice."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, update

from scheduler_app.db.models import Task
from scheduler_app.engine.scheduler import JOBS
from tests.acceptance.conftest import ServiceFactory
from tests.acceptance.service import Service, smtp_environment
from tests.support import SmtpSink, outbox_messages, reminder_ids

BATCH = 20


def subscribe(client: httpx.Client, email: str, delay_seconds: float) -> dict[str, Any]:
    response = client.post("/subscribe", json={"email": email, "delay_seconds": delay_seconds})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def fetch(client: httpx.Client, reminder_id: str) -> dict[str, Any]:
    response = client.get(f"/reminders/{reminder_id}", headers=Service.admin_headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sleep_until_due(created: list[dict[str, Any]], margin_s: float) -> None:
    latest = max(datetime.fromisoformat(body["remind_at"]) for body in created)
    remaining = (latest - datetime.now(UTC)).total_seconds() + margin_s
    if remaining > 0:
        time.sleep(remaining)


def assert_delivered_once(service: Service, delivered: list[str], expected: set[str]) -> None:
    counts = Counter(delivered)
    duplicates = {rid: n for rid, n in counts.items() if n > 1}
    unknown = set(counts) - expected
    missing = expected - set(counts)
    if duplicates or unknown or missing:
        service.fail(
            f"deliveries are not exactly once: duplicates={duplicates} "
            f"unknown={sorted(unknown)} missing={sorted(missing)}"
        )


def assert_all_sent_once(service: Service, ids: set[str]) -> None:
    with service.client() as client:
        states = {rid: fetch(client, rid) for rid in sorted(ids)}
    wrong = {
        rid: (body["status"], body["attempts"], body["last_error"])
        for rid, body in states.items()
        if body["status"] != "sent" or body["attempts"] != 1
    }
    if wrong:
        service.fail(f"reminders not recorded as sent after exactly one attempt: {wrong}")


@pytest.mark.parametrize("mail_backend", ["outbox", "smtp"])
def test_reminders_due_while_killed_are_delivered_once_after_restart(
    make_service: ServiceFactory,
    tmp_path: Path,
    mail_backend: str,
    request: pytest.FixtureRequest,
) -> None:
    if mail_backend == "smtp":
        sink: SmtpSink = request.getfixturevalue("smtp_sink")
        service = make_service(smtp_environment(sink.host, sink.port))

        def delivered() -> list[str]:
            return reminder_ids(sink.received())
    else:
        service = make_service()

        def delivered() -> list[str]:
            return reminder_ids(outbox_messages(tmp_path / "outbox"))

    service.start()
    with service.client() as client:
        created = [subscribe(client, f"user{i}@example.com", 2.0 + i * 0.05) for i in range(BATCH)]
    service.kill()
    ids = {body["id"] for body in created}
    assert len(ids) == BATCH
    # Otherwise the restart would have nothing left to prove for those reminders.
    assert delivered() == [], "a reminder was delivered before the kill: subscribing was too slow"

    sleep_until_due(created, margin_s=0.3)
    service.start()

    service.wait_until(
        f"all {BATCH} reminders delivered after the restart",
        lambda: ids <= set(delivered()),
        timeout_s=15.0,
    )
    assert_delivered_once(service, delivered(), ids)
    assert_all_sent_once(service, ids)
    # A late duplicate (a second job for the same reminder) would land shortly after the first.
    time.sleep(0.5)
    assert_delivered_once(service, delivered(), ids)


def test_reminders_whose_job_vanished_mid_delivery_are_recovered_on_start(
    make_service: ServiceFactory, database_url: str, tmp_path: Path
) -> None:
    service = make_service()
    service.start()
    with service.client() as client:
        created = [subscribe(client, f"user{i}@example.com", 30.0) for i in range(BATCH)]
    service.kill()
    ids = {body["id"] for body in created}

    # The state a SIGKILL during delivery leaves: APScheduler already removed the date job from
    # its store, the reminder row still says 'scheduled', and its due time has passed.
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            removed = connection.execute(
                delete(JOBS).where(JOBS.c.id.in_([f"reminder:{rid}" for rid in ids]))
            ).rowcount
            overdue = connection.execute(
                update(Task)
                .where(Task.id.in_(ids))
                .values(run_at=datetime.now(UTC) - timedelta(seconds=60))
            ).rowcount
    finally:
        engine.dispose()
    assert removed == BATCH, f"only {removed} of {BATCH} jobs were in the store after the kill"
    assert overdue == BATCH

    service.start()
    outbox = tmp_path / "outbox"

    def delivered() -> list[str]:
        return reminder_ids(outbox_messages(outbox))

    # Well inside the periodic sweep's 60 s interval: only the start-up pass can deliver in time.
    service.wait_until(
        f"all {BATCH} orphaned reminders delivered after the restart",
        lambda: ids <= set(delivered()),
        timeout_s=10.0,
    )
    assert_delivered_once(service, delivered(), ids)
    assert_all_sent_once(service, ids)
    time.sleep(0.5)
    assert_delivered_once(service, delivered(), ids)


def test_reminder_due_longer_ago_than_the_late_window_is_missed_not_sent(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = make_service({"SCHEDULER_REMINDERS__LATE_WINDOW_S": "1"})
    service.start()
    with service.client() as client:
        created = subscribe(client, "late@example.com", 1.0)
    service.kill()
    outbox = tmp_path / "outbox"
    assert outbox_messages(outbox) == [], "delivered before the kill: subscribing was too slow"

    # Past due by more than the 1 s window even before the restart adds its own start-up time.
    sleep_until_due([created], margin_s=1.5)
    service.start()

    with service.client() as client:

        def finished() -> dict[str, Any] | None:
            body = fetch(client, created["id"])
            return None if body["status"] == "scheduled" else body

        final = service.wait_until("the late reminder leaves 'scheduled'", finished)
    assert final["status"] == "missed", (final, service.log_tail())
    assert final["sent_at"] is None
    # The wording may change; what must stay is that the reason names the late-delivery window.
    assert "late-delivery window" in (final["last_error"] or ""), final["last_error"]
    time.sleep(0.5)
    assert outbox_messages(outbox) == [], service.log_tail()


def test_sigterm_stops_the_service_cleanly(make_service: ServiceFactory) -> None:
    service = make_service()
    service.start()
    with service.client() as client:
        # Something stored and pending, so the shutdown has a live job store to close.
        subscribe(client, "pending@example.com", 30.0)
    # terminate() fails the test if the process is still alive 5 s after the signal.
    code = service.terminate(timeout_s=5.0)
    assert code == 0, f"exit code {code}\n{service.log_tail()}"
    assert "scheduler-app stopped" in service.log_text(), service.log_tail()
