"""The daily report: what the service did in the 24 hours before a moment, read from its tables.

The window is half-open, [end - 24 h, end), so reports run at the same time each day neither
overlap nor leave a gap. It ends at the job's clock reading, so rows written while the report is
being read (their timestamps are later) never enter it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from scheduler_app.clock import as_utc
from scheduler_app.db.models import JobRun, RunOutcome, Task, TaskStatus
from scheduler_app.files import private_dir
from scheduler_app.reminders.job import REMINDER_JOB, REMINDER_JOB_PREFIX

WINDOW = timedelta(hours=24)
# Column order of the runs table and key order in the JSON file.
OUTCOMES: tuple[str, ...] = (
    RunOutcome.SUCCESS,
    RunOutcome.ERROR,
    RunOutcome.MISSED,
    RunOutcome.RUNNING,
)


@dataclass(frozen=True)
class ReminderCounts:
    created: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    missed: int = 0


@dataclass(frozen=True)
class LagStats:
    """Delivery lag (sent_at - remind_at) in seconds; the figures are None when none were sent."""

    count: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None


@dataclass(frozen=True)
class DailyReport:
    date: date
    timezone: str
    start: datetime
    end: datetime
    reminders: ReminderCounts
    lag: LagStats
    # job_id -> outcome -> count, every outcome present for every job listed.
    runs: Mapping[str, Mapping[str, int]]


def report_window(end: datetime, zone: ZoneInfo) -> tuple[datetime, datetime, date]:
    """Return the window's UTC start and end and the local date that names the report."""
    end = as_utc(end)
    return end - WINDOW, end, end.astimezone(zone).date()


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float | None:
    """Return the nearest-rank percentile of ascending values, or None for no values."""
    if not sorted_values:
        return None
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, not {percent}")
    rank = max(1, math.ceil(percent * len(sorted_values) / 100))
    return sorted_values[rank - 1]


def lag_stats(lags_s: Sequence[float]) -> LagStats:
    """Summarise delivery lags given in seconds, in any order."""
    ordered = sorted(lags_s)
    if not ordered:
        return LagStats()
    return LagStats(
        count=len(ordered),
        p50_s=nearest_rank(ordered, 50),
        p95_s=nearest_rank(ordered, 95),
        max_s=ordered[-1],
    )


def collect_daily_report(session: Session, end: datetime, zone: ZoneInfo) -> DailyReport:
    """Read the report for the 24 hours before end from the database."""
    start, end, day = report_window(end, zone)

    def within(column: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
        return (column >= start) & (column < end)

    def finished_as(status: TaskStatus) -> ColumnElement[bool]:
        return (Task.status == status) & within(Task.finished_at)

    # A reminder that succeeded was sent when it finished.
    sent = finished_as(TaskStatus.SUCCEEDED)
    # COUNT ignores the NULL a CASE without ELSE yields, so each column counts its own condition.
    counts = session.execute(
        select(
            func.count(case((within(Task.created_at), 1))),
            func.count(case((sent, 1))),
            func.count(case((finished_as(TaskStatus.FAILED), 1))),
            func.count(case((finished_as(TaskStatus.CANCELLED), 1))),
            func.count(case((finished_as(TaskStatus.MISSED), 1))),
        ).where(
            # Reads only rows that can count: created_at and finished_at are indexed, and the
            # sent arm is narrowed by the index on status.
            (Task.job == REMINDER_JOB) & (within(Task.created_at) | within(Task.finished_at) | sent)
        )
    ).one()
    lag_rows = session.execute(
        select(Task.run_at, Task.finished_at).where(Task.job == REMINDER_JOB, sent)
    )
    lags = [
        (as_utc(sent_at) - as_utc(remind_at)).total_seconds()
        for remind_at, sent_at in lag_rows
        if sent_at is not None
    ]

    runs: dict[str, dict[str, int]] = {}
    # Tasks have one job id each: a job's tasks count together, under the job's name.
    one_per_task = JobRun.job_id.startswith(f"{REMINDER_JOB_PREFIX}:") | JobRun.job_id.startswith(
        "task:"
    )
    job_key = case((one_per_task, JobRun.job), else_=JobRun.job_id).label("job_key")
    run_rows = session.execute(
        select(job_key, JobRun.outcome, func.count())
        .where(within(JobRun.scheduled_for))
        .group_by(job_key, JobRun.outcome)
        .order_by(job_key)
    )
    for job_id, outcome, count in run_rows:
        runs.setdefault(job_id, dict.fromkeys(OUTCOMES, 0))[outcome] = count

    return DailyReport(
        date=day,
        timezone=zone.key,
        start=start,
        end=end,
        reminders=ReminderCounts(
            created=counts[0],
            sent=counts[1],
            failed=counts[2],
            cancelled=counts[3],
            missed=counts[4],
        ),
        lag=lag_stats(lags),
        runs=runs,
    )


def report_to_json(report: DailyReport) -> dict[str, Any]:
    """Return the report as JSON-ready data."""
    counts = report.reminders
    return {
        "date": report.date.isoformat(),
        "timezone": report.timezone,
        "period": {"start": report.start.isoformat(), "end": report.end.isoformat()},
        "reminders": {
            "created": counts.created,
            "sent": counts.sent,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "missed": counts.missed,
        },
        "lag_s": {"p50": report.lag.p50_s, "p95": report.lag.p95_s, "max": report.lag.max_s},
        "runs": {job_id: dict(outcomes) for job_id, outcomes in report.runs.items()},
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cell(text: str) -> str:
    # A job id is free text from config.yaml; a bare "|" would split the table row.
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render_markdown(report: DailyReport) -> str:
    """Render the report as Markdown for people to read."""
    zone = ZoneInfo(report.timezone)
    local_start = report.start.astimezone(zone)
    local_end = report.end.astimezone(zone)
    counts = report.reminders
    lines = [
        f"# scheduler-app daily report {report.date.isoformat()} ({report.timezone})",
        "",
        f"Period: {local_start:%Y-%m-%d %H:%M} to {local_end:%Y-%m-%d %H:%M} {report.timezone}"
        + (
            ""
            if local_start.utcoffset() == local_end.utcoffset() == timedelta(0)
            else f" ({report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC)"
        ),
        "",
        "## Reminders",
        "",
        "| Reminders | Count |",
        "|---|---:|",
        f"| Created | {counts.created} |",
        f"| Sent | {counts.sent} |",
        f"| Failed | {counts.failed} |",
        f"| Cancelled | {counts.cancelled} |",
        f"| Missed | {counts.missed} |",
        "",
    ]
    lag = report.lag
    if lag.count == 0:
        lines.append("Delivery lag: no reminders sent")
    else:
        lines.append(
            f"Delivery lag over {lag.count} sent: p50 {_seconds(lag.p50_s)}, "
            f"p95 {_seconds(lag.p95_s)}, max {_seconds(lag.max_s)}"
        )
    lines += ["", "## Job runs", ""]
    if not report.runs:
        lines.append("No job runs were scheduled in this period.")
    else:
        lines.append("| Job | " + " | ".join(outcome.capitalize() for outcome in OUTCOMES) + " |")
        lines.append("|---|" + "---:|" * len(OUTCOMES))
        for job_id, outcomes in report.runs.items():
            figures = " | ".join(str(outcomes.get(outcome, 0)) for outcome in OUTCOMES)
            lines.append(f"| {_cell(job_id)} | {figures} |")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write text to path so that a reader sees the old file or the whole new one."""
    private_dir(path.parent)
    # Same folder as the target: os.replace is only atomic within one file system.
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_report(directory: Path, report: DailyReport, markdown: str) -> tuple[Path, Path]:
    """Write <date>.md and <date>.json into directory; return their paths.

    Another report for the same date (a manual run, a catch-up) is written beside the first,
    as <date>-<local time of its end, HHMMSS>.md and .json: no report replaces another.
    """
    stem = _free_stem(directory, report)
    markdown_path = directory / f"{stem}.md"
    json_path = directory / f"{stem}.json"
    write_atomically(json_path, json.dumps(report_to_json(report), indent=2) + "\n")
    write_atomically(markdown_path, markdown)
    return markdown_path, json_path


def _free_stem(directory: Path, report: DailyReport) -> str:
    day = report.date.isoformat()
    end = report.end.astimezone(ZoneInfo(report.timezone))
    candidates = itertools.chain(
        [day, f"{day}-{end:%H%M%S}"], (f"{day}-{end:%H%M%S}-{n}" for n in itertools.count(2))
    )
    return next(stem for stem in candidates if not (directory / f"{stem}.json").exists())
