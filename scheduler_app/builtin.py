"""The built-in jobs, registered by name: config.yaml and stored jobs refer to these names only."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.maintenance.daily_report import daily_report
from scheduler_app.maintenance.token_cleanup import token_cleanup
from scheduler_app.reminders.job import (
    REMINDER_JOB,
    REMINDER_JOB_PREFIX,
    REMINDER_WORDING,
    deliver_reminder,
    reminder_policy,
)
from scheduler_app.tasks.runner import TaskJob

REGISTRY: Mapping[str, RegisteredJob] = MappingProxyType(
    {
        job.name: job
        for job in (
            RegisteredJob(
                REMINDER_JOB,
                TaskJob(deliver_reminder, reminder_policy, REMINDER_WORDING),
                "Deliver one reminder e-mail.",
                configurable=False,
                job_id_prefix=REMINDER_JOB_PREFIX,
            ),
            RegisteredJob(
                "daily_report",
                daily_report,
                "Write and mail a report of the last 24 hours' reminders and job runs.",
                configurable=True,
            ),
            RegisteredJob(
                "token_cleanup",
                token_cleanup,
                "Expire old cancel tokens and Idempotency-Keys; delete old reminders and runs.",
                configurable=True,
                default_entry={
                    "id": "token-cleanup",
                    "cron": "*/15 * * * *",
                    "misfire_grace_s": 600,
                },
            ),
        )
    }
)

__all__ = ["REGISTRY"]
