"""An operator's round in a real browser against a real `scheduler-app serve`: log in, find a
job, pause and resume it, retry a failed reminder, see it in the audit log, log out; a
screenshot of every page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.service import Service, service_environment, smtp_environment
from tests.support import SmtpSink, running_smtp_sink, wait_until

TOKEN_ENV = "SCHEDULER_ADMIN_TOKEN"
CONFIG = """
timezone: UTC
jobs:
  - id: daily-report
    job: daily_report
    cron: "0 8 * * *"
    timezone: Europe/Berlin
    description: Summary of the day
"""
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    # Refuses the first message for good (5xx): that reminder fails at its first attempt.
    with running_smtp_sink(SmtpSink) as sink:
        sink.replies.append("550 no such mailbox")
        yield sink


@pytest.fixture
def service(tmp_path: Path, sink: SmtpSink) -> Iterator[Service]:
    variables = service_environment(
        tmp_path,
        f"sqlite:///{tmp_path / 'scheduler.db'}",
        smtp_environment(sink.host, sink.port),
    )
    service = Service(tmp_path, variables, CONFIG)
    service.start()
    try:
        yield service
    finally:
        service.close()


def failed_reminder(service: Service) -> str:
    with service.client() as client:
        created = client.post(
            "/subscribe",
            json={"email": "ada@example.com", "subject": "Stand-up", "delay_seconds": 0.1},
        )
        assert created.status_code == 201, created.text
        reminder_id: str = created.json()["id"]

        def failed() -> bool:
            shown = client.get(f"/reminders/{reminder_id}", headers=service.admin_headers())
            return bool(shown.json()["status"] == "failed")

        service.wait_until("the reminder failed", failed)
    return reminder_id


def confirm(page: Any, link: Any) -> str:
    """Follow an action's link, confirm it, and return the flash message shown."""
    link.click()
    page.locator("form.confirm button[type=submit]").click()
    flash = page.locator("p.flash")
    flash.wait_for()
    return str(flash.inner_text())


def test_operator_round(browser: Any, service: Service, sink: SmtpSink, artifacts: Path) -> None:
    reminder_id = failed_reminder(service)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    base = service.base_url

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

    # Log in.
    page.goto(f"{base}/dashboard")
    assert page.url == f"{base}/dashboard/login"
    shot("login")
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert "That is not the admin token." in page.inner_text("main")
    page.fill("input[name=token]", service.env[TOKEN_ENV])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    assert "Fire lag, last 24 hours" in page.inner_text("main")
    # The page refreshes its live part by itself.
    page.wait_for_selector("#live[data-refreshed-at]", state="attached", timeout=15_000)
    shot("overview")

    # Find the job, pause it and resume it.
    page.click("nav >> text=Jobs")
    page.fill("input[name=q]", "daily")
    page.click("form.filters button[type=submit]")
    row = page.locator("tr", has_text="daily-report")
    assert "At 08:00, every day" in row.inner_text()
    shot("jobs")
    pause = row.locator("a.button", has_text="Pause")
    pause.click()
    assert "Pause job daily-report?" in page.inner_text("main")
    shot("confirm")
    page.locator("form.confirm button[type=submit]").click()
    assert page.locator("p.flash").inner_text() == "Paused daily-report."
    row = page.locator("tr", has_text="daily-report")
    assert "paused" in row.inner_text()
    flash = confirm(page, row.locator("a.button", has_text="Resume"))
    assert flash.startswith("Resumed daily-report")

    page.click("td > a[href$='/jobs/daily-report']")
    page.wait_for_url(f"{base}/dashboard/jobs/daily-report")
    assert "Next five fires" in page.inner_text("main")
    shot("job")

    # Retry the failed reminder (the mail server accepts it this time).
    page.click("nav >> text=Failed")
    row = page.locator("tr", has_text=reminder_id)
    assert "550" in row.inner_text()
    shot("failed")
    flash = confirm(page, row.locator("a.button", has_text="Retry"))
    assert flash.startswith(f"Reminder {reminder_id} is scheduled again")
    wait_until(lambda: len(sink.received()) == 1)

    page.click("nav >> text=Tasks")
    page.fill("input[name=id]", reminder_id)
    page.click("form.filters button[type=submit]")
    page.wait_for_selector(f"tr:has-text('{reminder_id}')")
    shot("tasks")
    page.click("nav >> text=Quarantined")
    shot("quarantined")
    page.click("nav >> text=Config")
    assert "No changes" in page.inner_text("main")
    shot("config")

    # The actions are in the audit log.
    page.click("nav >> text=Audit")
    audit = page.inner_text("main")
    for action in ("login", "pause_job", "resume_job", "retry_reminder"):
        assert action in audit, action
    assert reminder_id in audit
    shot("audit")

    # Usable at phone width: nothing wider than the screen but the tables' own scrolling.
    page.set_viewport_size(PHONE)
    for name, path in (("overview", ""), ("jobs", "/jobs")):
        page.goto(f"{base}/dashboard{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        shot(f"phone-{name}")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Log out: the session is gone.
    page.click("text=Log out")
    page.wait_for_url(f"{base}/dashboard/login")
    assert "Logged out." in page.inner_text("main")
    page.goto(f"{base}/dashboard/jobs")
    assert page.url == f"{base}/dashboard/login"
    context.close()

    with httpx.Client(base_url=base) as client:
        entries = client.get("/dashboard/audit", follow_redirects=False)
        assert entries.status_code == 303
