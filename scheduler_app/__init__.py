"""scheduler_app: durable reminders, tasks and recurring jobs for Python web backends.

    from scheduler_app import DurableTasks, Scheduler, job, load_settings

Imported on first use: importing the package loads nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler_app.api.request_id import RequestIdMiddleware
    from scheduler_app.registry import job
    from scheduler_app.scheduler import DurableTasks, Scheduler
    from scheduler_app.settings import Settings, load_settings
    from scheduler_app.tasks.policy import JobFailure
    from scheduler_app.tasks.runner import TaskContext

_EXPORTS = {
    "job": "scheduler_app.registry",
    "Scheduler": "scheduler_app.scheduler",
    "DurableTasks": "scheduler_app.scheduler",
    "RequestIdMiddleware": "scheduler_app.api.request_id",
    "Settings": "scheduler_app.settings",
    "load_settings": "scheduler_app.settings",
    "JobFailure": "scheduler_app.tasks.policy",
    "TaskContext": "scheduler_app.tasks.runner",
}
__all__ = [
    "DurableTasks",
    "JobFailure",
    "RequestIdMiddleware",
    "Scheduler",
    "Settings",
    "TaskContext",
    "job",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scheduler_app' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
