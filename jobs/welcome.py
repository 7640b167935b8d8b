"""A welcome e-mail, sent as a task: retried if the mail server is away, never lost."""

from __future__ import annotations

from typing import cast

from scheduler_app import TaskContext, job
from scheduler_app.channels import EMAIL
from scheduler_app.channels.email import MailBackend, compose_message


@job("send_welcome_email", max_attempts=5)
async def send_welcome_email(ctx: TaskContext, email: str, name: str = "") -> str:
    """Send a new user the welcome e-mail."""
    assert ctx.task is not None
    greeting = f"Welcome, {name}!" if name else "Welcome!"
    message = compose_message(
        to=email,
        from_address=ctx.settings.mail.from_address,
        subject=greeting,
        body=f"{greeting}\n\nThanks for signing up.",
        sent_at=ctx.clock(),
        # The same Message-ID on every attempt: a mail server that took the first lets the
        # recipient's client drop the duplicate.
        stable_id=f"task-{ctx.task.id}",
        headers={"X-Task-Id": ctx.task.id},
    )
    await cast(MailBackend, ctx.channels[EMAIL]).send(message)
    return "sent"
