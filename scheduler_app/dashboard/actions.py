"""The operator's actions from the dashboard: each calls the service function its API route calls,
inside the audit log's record of it, and says in a sentence what came of it.

The names are the API routes' function names, as the audit log records them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
import anyio.to_thread

from scheduler_app.audit import Actor
from scheduler_app.cluster.service import ClusterService
from scheduler_app.db.models import TaskStatus
from scheduler_app.engine.jobs import JobsService
from scheduler_app.engine.quarantine import QuarantineService
from scheduler_app.errors import InvalidField
from scheduler_app.reminders.service import ReminderStatus
from scheduler_app.runtime import Runtime

# Reminders or tasks retried at most by one "retry all matching" (POST /reminders/retry's default).
RETRY_ALL_LIMIT = 500


@dataclass(frozen=True)
class Request:
    """An action's input: its target and, for "retry all matching", the filter."""

    target: str | None
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    jobs: JobsService
    quarantine: QuarantineService
    cluster: ClusterService


Work = Callable[[Services, Request], str]


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # the button's word
    question: str  # the confirm step's question; {target} is filled in
    needs_target: bool
    work: Work


def _run(coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    # The record is written from a worker thread (it blocks); an async service function is run
    # back on the event loop from there.
    return anyio.from_thread.run(coroutine)


def _target(request: Request) -> str:
    assert request.target is not None
    return request.target


def _pause(services: Services, request: Request) -> str:
    services.jobs.pause(_target(request))
    return f"Paused {request.target}."


def _resume(services: Services, request: Request) -> str:
    job = services.jobs.resume(_target(request))
    when = job.next_run_time.isoformat() if job.next_run_time else "no next run"
    return f"Resumed {request.target}: next run {when}."


def _run_now(services: Services, request: Request) -> str:
    run_id = _run(lambda: services.jobs.run_now(_target(request)))
    return f"Started a run of {request.target} (run {run_id})."


def _cancel(services: Services, request: Request) -> str:
    services.jobs.cancel(_target(request))
    return f"Cancelled {request.target}."


def _retry_task(services: Services, request: Request) -> str:
    task = services.runtime.tasks.retry(_target(request))
    return f"Task {request.target} is {task['status']} again, to run now."


def _retry_reminder(services: Services, request: Request) -> str:
    reminder = services.runtime.reminders.retry(_target(request))
    return f"Reminder {request.target} is {reminder['status']} again, to be sent now."


def _retry_reminders(services: Services, request: Request) -> str:
    filters = request.filters
    status = _reminder_status(filters.get("status") or "failed")
    requeued = services.runtime.reminders.retry_matching(
        status,
        filters.get("email") or None,
        filters.get("error_contains") or None,
        None,
        None,
        RETRY_ALL_LIMIT,
    )
    return f"Retried {len(requeued)} reminder(s)."


def _retry_tasks(services: Services, request: Request) -> str:
    filters = request.filters
    status = _task_status(filters.get("status") or "failed")
    requeued = services.runtime.tasks.retry_matching(
        job=filters.get("job") or None, status=status, limit=RETRY_ALL_LIMIT
    )
    return f"Retried {len(requeued)} task(s)."


def _restore(services: Services, request: Request) -> str:
    services.quarantine.restore_job(_target(request))
    return f"Restored {request.target}."


def _reload(services: Services, request: Request) -> str:
    plan = _run(services.runtime.reload)
    summary = plan.summary()
    counts = ", ".join(f"{len(summary[key])} {key}" for key in ("added", "changed", "removed"))
    return f"Configuration reloaded: {counts}."


def _resign(services: Services, request: Request) -> str:
    resigned = _run(services.cluster.resign)
    return f"Asked leader {resigned.id} (term {resigned.term}) to step down."


def _reminder_status(value: str) -> ReminderStatus:
    if value not in (ReminderStatus.FAILED, ReminderStatus.MISSED):
        raise InvalidField(("form", "status"), "must be failed or missed")
    return ReminderStatus(value)


def _task_status(value: str) -> TaskStatus:
    if value not in (TaskStatus.FAILED, TaskStatus.MISSED):
        raise InvalidField(("form", "status"), "must be failed or missed")
    return TaskStatus(value)


ACTIONS: Mapping[str, Action] = {
    action.name: action
    for action in (
        Action("pause_job", "Pause", "Pause job {target}?", True, _pause),
        Action("resume_job", "Resume", "Resume job {target}?", True, _resume),
        Action("run_job", "Run now", "Run job {target} once now?", True, _run_now),
        Action("cancel_job", "Cancel", "Cancel job {target}?", True, _cancel),
        Action("retry_task", "Retry", "Retry task {target} now?", True, _retry_task),
        Action("retry_reminder", "Retry", "Retry reminder {target} now?", True, _retry_reminder),
        Action(
            "retry_reminders",
            "Retry all matching",
            "Retry every reminder matching this filter?",
            False,
            _retry_reminders,
        ),
        Action(
            "retry_tasks",
            "Retry all matching",
            "Retry every task matching this filter?",
            False,
            _retry_tasks,
        ),
        Action(
            "restore_quarantined_job",
            "Restore",
            "Put quarantined job {target} back in the job store?",
            True,
            _restore,
        ),
        Action(
            "reload_configuration",
            "Apply",
            "Re-read the configuration file and apply its jobs?",
            False,
            _reload,
        ),
        Action(
            "resign_leadership",
            "Resign leadership",
            "Make the leader step down (a follower takes over)?",
            False,
            _resign,
        ),
    )
}
# The filter fields an action's form may carry.
FILTER_FIELDS = ("email", "error_contains", "job", "status")


async def perform(action: Action, services: Services, actor: Actor, request: Request) -> str:
    """Run the action inside its audit record (in a worker thread); its result in words.
    Errors propagate after being recorded."""

    def recorded() -> str:
        with services.runtime.audit.recorded(actor, action.name, request.target) as outcome:
            message = action.work(services, request)
            outcome.detail = message
            return message

    result: str = await anyio.to_thread.run_sync(recorded)
    return result
