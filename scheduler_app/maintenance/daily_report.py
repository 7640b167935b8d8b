"""The daily report job: summarise the last 24 hours, write it to files, mail it if configured."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from scheduler_app.channels import EMAIL
from scheduler_app.channels.email import MailBackend, compose_message
from scheduler_app.engine.executor import JobContext
from scheduler_app.maintenance import reports

logger = logging.getLogger(__name__)


async def daily_report(ctx: JobContext) -> str:
    """Write <reports.dir>/<date>.md and .json for the 24 hours before now; mail the Markdown.

    Returns a one-line summary of the figures and where the report was written.
    """
    settings = ctx.settings
    now = ctx.clock()

    def collect() -> reports.DailyReport:
        with ctx.sessions() as session:
            return reports.collect_daily_report(session, now, settings.zone)

    # The database work runs in a worker thread with its own session, as does the file writing:
    # neither blocks the event loop that runs the other jobs.
    report = await asyncio.to_thread(collect)
    markdown = reports.render_markdown(report)
    markdown_path, _ = await asyncio.to_thread(
        reports.write_report, settings.reports.dir, report, markdown
    )

    day = report.date.isoformat()
    failures: list[str] = []
    for recipient in settings.reports.recipients:
        message = compose_message(
            to=recipient,
            from_address=settings.mail.from_address,
            subject=f"scheduler-app daily report {day}",
            body=markdown,
            sent_at=ctx.clock(),
            stable_id=f"daily-report-{day}",
        )
        # One unreachable recipient must not keep the report from the others.
        try:
            await cast(MailBackend, ctx.channels[EMAIL]).send(message)
        except Exception as exc:
            logger.warning("daily report %s not delivered to %s: %s", day, recipient, exc)
            failures.append(f"{recipient} ({type(exc).__name__}: {exc})")
    if failures:
        raise RuntimeError(
            f"report {day} written to {markdown_path} but not mailed to: " + ", ".join(failures)
        )

    counts = report.reminders
    runs = sum(sum(outcomes.values()) for outcomes in report.runs.values())
    mailed = len(settings.reports.recipients)
    return (
        f"report {day}: {counts.created} created, {counts.sent} sent, {counts.failed} failed, "
        f"{counts.cancelled} cancelled, {counts.missed} missed, {runs} job runs; "
        f"written to {markdown_path}" + (f", mailed to {mailed} recipients" if mailed else "")
    )
