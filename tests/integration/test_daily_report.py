"""The daily report: figures read from real databases, the files it writes, the mail it sends."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from scheduler_app.channels import EMAIL
from scheduler_app.channels.email.outbox import OutboxBackend
from scheduler_app.db.batch_writer import BatchWriter
from scheduler_app.db.engine import create_session_factory
from scheduler_app.db.models import JobRun, Task
from scheduler_app.engine.executor import JobContext
from scheduler_app.maintenance.daily_report import daily_report
from scheduler_app.maintenance.reports import (
    DailyReport,
    LagStats,
    ReminderCounts,
    lag_stats,
    nearest_rank,
    render_markdown,
    report_window,
    write_atomically,
)
from scheduler_app.settings import Settings
from tests.support import make_settings, outbox_messages, reminder_task

# The report's window is [START, END).
END = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
START = END - timedelta(hours=24)
LONG_AGO = START - timedelta(days=3)
SECOND = timedelta(seconds=1)


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(0, 15), (5, 15), (30, 20), (40, 20), (50, 35), (95, 50), (100, 50)],
)
def test_nearest_rank_takes_the_value_at_the_ceiling_rank(percent: float, expected: float) -> None:
    assert nearest_rank([15, 20, 35, 40, 50], percent) == expected


def test_nearest_rank_of_nothing_is_none_and_of_one_value_that_value() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([7.5], 50) == 7.5
    assert nearest_rank([7.5], 95) == 7.5


def test_nearest_rank_is_exact_where_the_rank_is_a_whole_number() -> None:
    values = [float(n) for n in range(1, 21)]
    # 95 % of 20 is rank 19 exactly: no floating-point error may push it to 20.
    assert nearest_rank(values, 95) == 19
    assert nearest_rank(values, 50) == 10


@pytest.mark.parametrize("percent", [-1, 100.5])
def test_nearest_rank_refuses_a_percent_outside_0_to_100(percent: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        nearest_rank([1.0], percent)


def test_lag_stats_sorts_its_input() -> None:
    assert lag_stats([60.0, 2.0, 0.5, 10.0, 3.0]) == LagStats(
        count=5, p50_s=3.0, p95_s=60.0, max_s=60.0
    )
    assert lag_stats([]) == LagStats(count=0, p50_s=None, p95_s=None, max_s=None)


def test_report_window_is_the_24_hours_before_and_named_by_the_local_date() -> None:
    end = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)
    start, utc_end, day = report_window(end, ZoneInfo("Europe/Berlin"))
    assert (start, utc_end) == (end - timedelta(hours=24), end)
    assert day == date(2026, 11, 22)
    assert report_window(end, ZoneInfo("America/New_York"))[2] == date(2026, 11, 21)


def sample_report(**changes: Any) -> DailyReport:
    values: dict[str, Any] = {
        "date": date(2026, 11, 21),
        "timezone": "Europe/Berlin",
        "start": START,
        "end": END,
        "reminders": ReminderCounts(created=12, sent=10, failed=1, cancelled=2, missed=1),
        "lag": LagStats(count=10, p50_s=1.25, p95_s=31.0, max_s=45.5),
        "runs": {
            "nightly-cleanup": {"success": 1, "error": 0, "missed": 0, "running": 0},
            "report|daily": {"success": 0, "error": 1, "missed": 1, "running": 1},
        },
    }
    values.update(changes)
    return DailyReport(**values)


def test_render_markdown_lays_out_counts_lag_and_runs() -> None:
    assert render_markdown(sample_report()) == (
        "# scheduler-app daily report 2026-11-21 (Europe/Berlin)\n"
        "\n"
        "Period: 2026-11-20 07:00 to 2026-11-21 07:00 Europe/Berlin "
        "(2026-11-20 06:00 to 2026-11-21 06:00 UTC)\n"
        "\n"
        "## Reminders\n"
        "\n"
        "| Reminders | Count |\n"
        "|---|---:|\n"
        "| Created | 12 |\n"
        "| Sent | 10 |\n"
        "| Failed | 1 |\n"
        "| Cancelled | 2 |\n"
        "| Missed | 1 |\n"
        "\n"
        "Delivery lag over 10 sent: p50 1.2 s, p95 31.0 s, max 45.5 s\n"
        "\n"
        "## Job runs\n"
        "\n"
        "| Job | Success | Error | Missed | Running |\n"
        "|---|---:|---:|---:|---:|\n"
        "| nightly-cleanup | 1 | 0 | 0 | 0 |\n"
        "| report\\|daily | 0 | 1 | 1 | 1 |\n"
    )


def test_render_markdown_of_a_quiet_day() -> None:
    markdown = render_markdown(sample_report(reminders=ReminderCounts(), lag=LagStats(), runs={}))
    assert "| Created | 0 |" in markdown
    assert "Delivery lag: no reminders sent\n" in markdown
    assert "No job runs were scheduled in this period.\n" in markdown


def test_write_atomically_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "report.md"
    write_atomically(target, "first\n")
    write_atomically(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert [path.name for path in target.parent.iterdir()] == ["report.md"]


# --- against the databases ----------------------------------------------------------------------


def report_settings(
    tmp_path: Path, database_url: str, *, timezone: str = "UTC", **reports: Any
) -> Settings:
    return make_settings(
        tmp_path, database_url, timezone=timezone, reports={"dir": tmp_path / "reports", **reports}
    )


def context(settings: Settings, engine: Engine, now: datetime = END) -> JobContext:
    return JobContext(
        settings=settings,
        sessions=create_session_factory(engine),
        channels={EMAIL: OutboxBackend(settings.mail.outbox_dir)},
        clock=lambda: now,
        writer=BatchWriter(create_session_factory(engine)),
    )


def reminder(
    status: str = "scheduled",
    *,
    created_at: datetime = LONG_AGO,
    remind_at: datetime | None = None,
    sent_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> Task:
    return reminder_task(
        id=str(uuid.uuid4()),
        remind_at=remind_at or created_at + timedelta(hours=1),
        status=status,
        attempts=1 if status in {"sent", "failed"} else 0,
        created_at=created_at,
        updated_at=finished_at or created_at,
        sent_at=sent_at,
        finished_at=finished_at,
    )


def sent(remind_at: datetime, lag_s: float) -> Task:
    at = remind_at + timedelta(seconds=lag_s)
    return reminder("sent", remind_at=remind_at, sent_at=at, finished_at=at)


def ended(status: str, finished_at: datetime) -> Task:
    return reminder(status, finished_at=finished_at)


def run(job_id: str, outcome: str, scheduled_for: datetime) -> JobRun:
    running = outcome == "running"
    return JobRun(
        id=str(uuid.uuid4()),
        job_id=job_id,
        job="some_job",
        scheduled_for=scheduled_for,
        started_at=None if outcome == "missed" else scheduled_for,
        finished_at=None if running else scheduled_for + timedelta(seconds=5),
        outcome=outcome,
        manual=False,
    )


def store(engine: Engine, *rows: Task | JobRun) -> None:
    with create_session_factory(engine)() as session:
        session.add_all(rows)
        session.commit()


def store_known_day(engine: Engine) -> None:
    """Rows in the window and, for each figure, rows just outside it that must not count."""
    due = START + timedelta(hours=6)
    store(
        engine,
        # Created: 3 inside (the start is inclusive), 2 outside (the end is exclusive).
        reminder(created_at=START),
        reminder(created_at=START + timedelta(hours=1)),
        reminder(created_at=END - SECOND),
        reminder(created_at=START - SECOND),
        reminder(created_at=END),
        # Sent: 5 inside with lags 0.5, 2, 3, 10 and 60 s; 2 outside.
        sent(due, 0.5),
        sent(due, 2),
        sent(due, 3),
        sent(due, 10),
        sent(due, 60),
        sent(START - timedelta(hours=1), 1000),
        sent(END, 1000),
        # Failed 1, cancelled 2, missed 1 inside; one of each outside.
        ended("failed", START + timedelta(hours=2)),
        ended("failed", START - SECOND),
        ended("cancelled", START),
        ended("cancelled", END - SECOND),
        ended("cancelled", END),
        ended("missed", START + timedelta(hours=3)),
        ended("missed", LONG_AGO),
        # Runs: two jobs inside the window, one of them also before and after it.
        run("nightly", "success", START + timedelta(hours=1)),
        run("nightly", "success", START + timedelta(hours=2)),
        run("nightly", "error", START + timedelta(hours=3)),
        run("nightly", "success", START - SECOND),
        run("nightly", "success", END),
        run("reminder-sweep", "missed", START),
        run("reminder-sweep", "running", END - SECOND),
        run("old-job", "error", LONG_AGO),
    )


@pytest.mark.anyio
async def test_the_report_counts_the_window_only_and_writes_both_files(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    store_known_day(engine)
    settings = report_settings(tmp_path, database_url)

    summary = await daily_report(context(settings, engine))

    markdown_path = tmp_path / "reports" / "2026-11-21.md"
    assert summary == (
        "report 2026-11-21: 3 created, 5 sent, 1 failed, 2 cancelled, 1 missed, 5 job runs; "
        f"written to {markdown_path}"
    )
    data = json.loads((tmp_path / "reports" / "2026-11-21.json").read_text(encoding="utf-8"))
    assert data == {
        "date": "2026-11-21",
        "timezone": "UTC",
        "period": {"start": "2026-11-20T06:00:00+00:00", "end": "2026-11-21T06:00:00+00:00"},
        "reminders": {"created": 3, "sent": 5, "failed": 1, "cancelled": 2, "missed": 1},
        "lag_s": {"p50": 3.0, "p95": 60.0, "max": 60.0},
        "runs": {
            "nightly": {"success": 2, "error": 1, "missed": 0, "running": 0},
            "reminder-sweep": {"success": 0, "error": 0, "missed": 1, "running": 1},
        },
    }
    markdown = markdown_path.read_text(encoding="utf-8")
    assert markdown.startswith("# scheduler-app daily report 2026-11-21 (UTC)\n")
    for line in (
        "| Created | 3 |",
        "| Sent | 5 |",
        "| Failed | 1 |",
        "| Cancelled | 2 |",
        "| Missed | 1 |",
        "Delivery lag over 5 sent: p50 3.0 s, p95 60.0 s, max 60.0 s",
        "| nightly | 2 | 1 | 0 | 0 |",
        "| reminder-sweep | 0 | 0 | 1 | 1 |",
    ):
        assert f"\n{line}\n" in markdown
    assert "old-job" not in markdown
    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == [
        "2026-11-21.json",
        "2026-11-21.md",
    ]
    # No recipients configured: nothing is mailed.
    assert outbox_messages(settings.mail.outbox_dir) == []


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "utf-8")


@pytest.mark.anyio
async def test_the_markdown_is_mailed_to_each_recipient(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    store_known_day(engine)
    settings = report_settings(
        tmp_path,
        database_url,
        timezone="Europe/Berlin",
        recipients=["ops@example.com", "lead@example.com"],
    )

    summary = await daily_report(context(settings, engine))

    assert summary.endswith(", mailed to 2 recipients")
    markdown = (tmp_path / "reports" / "2026-11-21.md").read_text(encoding="utf-8")
    assert markdown.startswith("# scheduler-app daily report 2026-11-21 (Europe/Berlin)\n")
    messages = outbox_messages(settings.mail.outbox_dir)
    assert sorted(str(message["To"]) for message in messages) == [
        "lead@example.com",
        "ops@example.com",
    ]
    for message in messages:
        assert message["Subject"] == "scheduler-app daily report 2026-11-21"
        assert message["From"] == "Tests <tests@example.com>"
        assert message["Message-ID"] == "<daily-report-2026-11-21@example.com>"
        assert message.get_content_type() == "text/plain"
        assert body(message) == markdown


@pytest.mark.anyio
async def test_the_file_is_named_by_the_local_date_of_the_window_end(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = report_settings(tmp_path, database_url, timezone="Asia/Tokyo")

    # 20:00 UTC on the 21st is 05:00 on the 22nd in Tokyo.
    await daily_report(context(settings, engine, now=datetime(2026, 11, 21, 20, tzinfo=UTC)))

    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == [
        "2026-11-22.json",
        "2026-11-22.md",
    ]


@pytest.mark.anyio
async def test_a_day_without_activity_still_yields_a_report(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    store(engine, reminder(created_at=LONG_AGO), run("nightly", "success", LONG_AGO))
    settings = report_settings(tmp_path, database_url, recipients=["ops@example.com"])

    summary = await daily_report(context(settings, engine))

    assert summary.startswith(
        "report 2026-11-21: 0 created, 0 sent, 0 failed, 0 cancelled, 0 missed, 0 job runs; "
    )
    data = json.loads((tmp_path / "reports" / "2026-11-21.json").read_text(encoding="utf-8"))
    assert data["reminders"] == {"created": 0, "sent": 0, "failed": 0, "cancelled": 0, "missed": 0}
    assert data["lag_s"] == {"p50": None, "p95": None, "max": None}
    assert data["runs"] == {}
    markdown = (tmp_path / "reports" / "2026-11-21.md").read_text(encoding="utf-8")
    assert "Delivery lag: no reminders sent" in markdown
    [message] = outbox_messages(settings.mail.outbox_dir)
    assert body(message) == markdown


@pytest.mark.anyio
async def test_a_second_run_for_the_same_date_is_kept_beside_the_first(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = report_settings(tmp_path, database_url)
    await daily_report(context(settings, engine))
    store(engine, reminder(created_at=END - SECOND))

    second = await daily_report(context(settings, engine))
    await daily_report(context(settings, engine))

    reports = tmp_path / "reports"
    first = json.loads((reports / "2026-11-21.json").read_text(encoding="utf-8"))
    later = json.loads((reports / f"2026-11-21-{END:%H%M%S}.json").read_text(encoding="utf-8"))
    assert (first["reminders"]["created"], later["reminders"]["created"]) == (0, 1)
    assert f"written to {reports / f'2026-11-21-{END:%H%M%S}.md'}" in second
    assert sorted(path.name for path in reports.iterdir()) == [
        "2026-11-21-060000-2.json",
        "2026-11-21-060000-2.md",
        "2026-11-21-060000.json",
        "2026-11-21-060000.md",
        "2026-11-21.json",
        "2026-11-21.md",
    ]


def test_a_report_in_utc_gives_its_period_once() -> None:
    markdown = render_markdown(replace(sample_report(), timezone="UTC"))
    assert "Period: 2026-11-20 06:00 to 2026-11-21 06:00 UTC\n" in markdown


@pytest.mark.anyio
async def test_reminder_deliveries_are_counted_together_under_their_job(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    moment = END - timedelta(hours=1)
    deliveries = [run(f"reminder:{n}", "success", moment) for n in range(3)]
    for delivery in deliveries:
        delivery.job = "deliver_reminder"
    store(engine, *deliveries, run("nightly", "error", moment))
    settings = report_settings(tmp_path, database_url)

    await daily_report(context(settings, engine))

    data = json.loads((tmp_path / "reports" / "2026-11-21.json").read_text(encoding="utf-8"))
    assert data["runs"] == {
        "deliver_reminder": {"success": 3, "error": 0, "missed": 0, "running": 0},
        "nightly": {"success": 0, "error": 1, "missed": 0, "running": 0},
    }
