"""The reminder job: a reminder is a task of this job, its e-mail fields the task's arguments."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from scheduler_app.channels import EMAIL
from scheduler_app.channels.email import MailBackend, OutgoingMessage, compose_message
from scheduler_app.settings import Settings
from scheduler_app.tasks.attempts import MARK_SENT
from scheduler_app.tasks.policy import TaskPolicy
from scheduler_app.tasks.runner import TaskContext, Wording

REMINDER_JOB = "deliver_reminder"
# A reminder's job id is reminder:<id> (GET /jobs, DELETE /jobs/{id}).
REMINDER_JOB_PREFIX = "reminder"


# As the log has always spoken of reminders.
REMINDER_WORDING = Wording("reminder", "delivered", "sent", "is delivered again", MARK_SENT)


def reminder_policy(settings: Settings) -> TaskPolicy:
    """Retries and the late-delivery window of reminders, from reminders.*."""
    rules = settings.reminders
    return TaskPolicy(
        max_attempts=rules.max_attempts,
        retry_base_s=rules.retry_base_s,
        retry_max_s=rules.retry_max_s,
        late_window=timedelta(seconds=rules.late_window_s),
    )


async def deliver_reminder(ctx: TaskContext, email: str, subject: str, message: str) -> str:
    """Send the reminder e-mail; a failure to hand it over raises DeliveryError."""
    mail = cast(MailBackend, ctx.channels[EMAIL])
    await mail.send(render_reminder(ctx, email, subject, message))
    return "sent"


def render_reminder(ctx: TaskContext, email: str, subject: str, message: str) -> OutgoingMessage:
    assert ctx.task is not None, "a reminder is always sent as a task"
    reminder_id = ctx.task.id
    return compose_message(
        to=email,
        from_address=ctx.settings.mail.from_address,
        subject=subject,
        body=message
        or f"This is the reminder you asked for, due at {ctx.task.run_at:%Y-%m-%d %H:%M} UTC.",
        sent_at=ctx.clock(),
        stable_id=f"reminder-{reminder_id}",
        headers={"X-Reminder-Id": reminder_id},
    )
