"""The job of the tasks scenario: one e-mail per task.

The harness never imports this module: it copies the file beside the service's config file,
whose `job_modules: [bench_jobs]` makes the service import it, as a deployment's own job module.
"""

from __future__ import annotations

from typing import cast

from scheduler_app import TaskContext, job
from scheduler_app.channels import EMAIL
from scheduler_app.channels.email import MailBackend, compose_message


# The defaults of tasks.* (retries, no late window): what a job of your own gets.
@job("bench_mail")
async def bench_mail(ctx: TaskContext, email: str, index: int) -> str:
    """Send one benchmark e-mail."""
    assert ctx.task is not None
    message = compose_message(
        to=email,
        from_address=ctx.settings.mail.from_address,
        subject=f"Bench task {index}",
        body="A benchmark task.",
        sent_at=ctx.clock(),
        stable_id=f"task-{ctx.task.id}",
        # The sink counts messages by this header: the task's id, as a reminder's carries its own.
        headers={"X-Reminder-Id": ctx.task.id},
    )
    await cast(MailBackend, ctx.channels[EMAIL]).send(message)
    return "sent"
