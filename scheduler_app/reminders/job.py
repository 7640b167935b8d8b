"""Reminder delivery: the job that the scheduler runs when a reminder falls due."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial

from scheduler_app.channels.email import DeliveryError, OutgoingMessage, compose_message
from scheduler_app.db.engine import with_db_retries
from scheduler_app.engine.executor import JobContext, Missed, RetryLater
from scheduler_app.tasks import attempts as delivery

logger = logging.getLogger(__name__)
_jitter = random.Random()  # noqa: S311 (spreading retries, not security)


async def deliver_reminder(ctx: JobContext, reminder_id: str) -> str:
    """Send the reminder unless it is no longer scheduled or is past the late-delivery window.

    Returns "sent" or "skipped" (cancelled or already finished). Raises Missed past the
    window, RetryLater after a transient failure with attempts left, or the error itself
    once the reminder is marked failed.
    """
    policy = ctx.settings.reminders
    window = timedelta(seconds=policy.late_window_s)

    def start() -> Awaitable[tuple[str, delivery.Attempt | None]]:
        starting = delivery.DeliveryStart(reminder_id, ctx.clock(), window)
        return ctx.writer.run_grouped(delivery.START_DELIVERIES, starting)

    # Each database step is a short transaction shared with the deliveries due at the same
    # time; no connection is held while the message is on its way. Giving up on this one after
    # a while is safe: nothing has been sent yet. Each outcome below is recorded until_written,
    # however long the database is away: the job stays running meanwhile, so the recovery
    # pass, which skips running jobs, never delivers the reminder again.
    outcome, reminder = await with_db_retries(start)
    if reminder is None:
        if outcome in ("missed", "failed"):
            logger.warning("reminder %s %s: past its late-delivery window", reminder_id, outcome)
            raise Missed(
                f"{outcome}: past the late-delivery window (see the reminder's last_error)"
            )
        return outcome
    try:
        await ctx.mail.send(render_reminder(reminder, ctx))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DeliveryError) else str(exc)
        transient = isinstance(exc, DeliveryError) and exc.transient
        if transient and reminder.attempts < policy.max_attempts:
            retry_at = ctx.clock() + delivery.retry_delay(reminder.attempts, policy, _jitter)
            retry = partial(
                delivery.record_retry,
                reminder_id=reminder_id,
                now=ctx.clock(),
                retry_at=retry_at,
                error=error,
            )
            await ctx.writer.run(retry, until_written=True)
            raise RetryLater(retry_at, f"attempt {reminder.attempts}: {error}") from exc
        why = "permanent error" if not transient else f"gave up after {reminder.attempts} attempts"
        failed = partial(
            delivery.mark_failed, reminder_id=reminder_id, now=ctx.clock(), error=f"{why}: {error}"
        )
        await ctx.writer.run(failed, until_written=True)
        raise
    sent = (reminder_id, ctx.clock())
    # The message is out; marking it sent is a turn of the database writer. Holding the slot
    # through that turn left SMTP sessions idle while the running deliveries waited for the
    # writer: storms of 5,000 reminders took 11 to 15 % longer to drain (docs/performance.md).
    # While the database is away, deliveries waiting so keep their slots beyond the first
    # max_concurrent_jobs (see work_done): an outage stops new deliveries rather than piling up
    # messages sent but not recorded.
    ctx.work_done()
    try:
        await ctx.writer.run_grouped(delivery.MARK_SENT, sent, until_written=True)
    except asyncio.CancelledError:
        # A shutdown while the database is away (drain cancels what outlasts its timeout).
        logger.error(
            "reminder %s: delivered, but not yet marked sent as the service stops; unless the "
            "database takes the writer's last try, it is delivered again after the restart",
            reminder_id,
        )
        raise
    return "sent"


def render_reminder(reminder: delivery.Attempt, ctx: JobContext) -> OutgoingMessage:
    return compose_message(
        to=reminder.email,
        from_address=ctx.settings.mail.from_address,
        subject=reminder.subject,
        body=reminder.message
        or f"This is the reminder you asked for, due at {reminder.remind_at:%Y-%m-%d %H:%M} UTC.",
        sent_at=ctx.clock(),
        stable_id=f"reminder-{reminder.reminder_id}",
        headers={"X-Reminder-Id": reminder.reminder_id},
    )
