"""One attempt of a task: the job that the scheduler runs when a task falls due.

A job function of a task job is called as `function(ctx, **args)`, ctx being a TaskContext (the
JobContext plus the task's attempt). Everything around the call is the same for every job:
start the attempt (or record that the task is past its late window), run, then record
success, a retry or the failure, by the job's TaskPolicy.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from functools import partial
from typing import Any

from scheduler_app.cluster.fence import Fenced
from scheduler_app.db.batch_writer import Grouped
from scheduler_app.db.engine import with_db_retries
from scheduler_app.engine.executor import JobContext, Missed, RetryLater, Superseded
from scheduler_app.logs import in_task
from scheduler_app.settings import Settings
from scheduler_app.tasks import attempts, policy
from scheduler_app.tasks.attempts import TaskAttempt

logger = logging.getLogger(__name__)
SUPERSEDED = (
    "not recorded: the task has moved on meanwhile (cancelled, or attempted again by the "
    "leader after this process lost the lease)"
)
_jitter = random.Random()  # noqa: S311 (spreading retries, not security)


class AttemptOutcome(enum.StrEnum):
    """How an attempt of a task ended, as this process saw it (told to the metrics through
    JobContext.attempt_ended). The words are those of RunOutcome and TaskStatus."""

    # The job function returned and the task is marked succeeded.
    SUCCESS = "success"
    # The job function failed and another attempt is scheduled.
    ERROR = "error"
    # The job function failed for good (or the task came due past its late window after
    # failed attempts): the task is marked failed.
    FAILED = "failed"
    # Past its late window without a failed attempt: marked missed, the function not called.
    MISSED = "missed"
    # No longer scheduled (cancelled, finished, or started elsewhere): nothing ran.
    SKIPPED = "skipped"
    # The attempt failed, but the task had moved on meanwhile: nothing recorded.
    SUPERSEDED = "superseded"
    # Not started: this process no longer leads.
    FENCED = "fenced"


@dataclass(frozen=True)
class TaskContext(JobContext):
    """What a task's job function may use: the JobContext, and the attempt it is in."""

    task: TaskAttempt | None = None

    @classmethod
    def of(cls, ctx: JobContext, task: TaskAttempt | None) -> TaskContext:
        return cls(**{f.name: getattr(ctx, f.name) for f in fields(JobContext)}, task=task)


TaskFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Wording:
    """How the log speaks of a job's tasks: a reminder is "delivered" and "marked sent"."""

    noun: str = "task"
    done: str = "done"
    recorded: str = "succeeded"
    again: str = "runs again"
    # The grouped write that records success, named as the log shows it.
    mark_done: Grouped[tuple[str, datetime], None] = attempts.MARK_SUCCEEDED


@dataclass(frozen=True)
class TaskJob:
    """The registered function of a task job: runs one attempt of the task it is given."""

    function: TaskFunction
    # The job's policy, from the settings (reminders.* for the reminder job).
    policy_of: Callable[[Settings], policy.TaskPolicy]
    wording: Wording = Wording()

    async def __call__(self, ctx: JobContext, task_id: str) -> Any:
        """Run an attempt unless the task is no longer scheduled or is past its late window.

        Returns what the function returned, or "skipped" (cancelled or already finished).
        Raises Missed past the window, RetryLater after a failure with attempts left, or the
        error itself once the task is marked failed.
        """
        # The lines of the attempt, the job function's and the executor's about its outcome
        # name the task.
        in_task(task_id)
        rules = self.policy_of(ctx.settings)

        def start() -> Awaitable[tuple[str, TaskAttempt | None]]:
            fence = ctx.fence
            starting = attempts.AttemptStart(
                task_id, ctx.clock(), rules.late_window, fence.term, fence.enforced
            )
            return ctx.writer.run_grouped(attempts.START_ATTEMPTS, starting)

        # Each database step is a short transaction shared with the attempts due at the same
        # time; no connection is held while the function runs. Giving up on this one after a
        # while is safe: nothing has run yet. Each outcome below is recorded until_written,
        # however long the database is away: the job stays running meanwhile, so the recovery
        # pass, which skips running jobs, never runs the task again.
        outcome, attempt = await with_db_retries(start)
        if outcome == "fenced":
            ctx.attempt_ended(AttemptOutcome.FENCED)
            raise Fenced(f"task {task_id}: not started, this process no longer leads")
        if attempt is None:
            if outcome in ("missed", "failed"):
                ctx.attempt_ended(AttemptOutcome(outcome))
                logger.warning("task %s %s: past its late window", task_id, outcome)
                raise Missed(f"{outcome}: past the late window (see the task's last_error)")
            ctx.attempt_ended(AttemptOutcome.SKIPPED)
            return outcome
        try:
            result = await self.function(TaskContext.of(ctx, attempt), **attempt.args)
        except Exception as exc:
            await self._failed(ctx, attempt, rules, exc)
            ctx.attempt_ended(AttemptOutcome.FAILED)
            raise
        # The work is done; marking it succeeded is a turn of the database writer. Holding the
        # slot through that turn left SMTP sessions idle while the running deliveries waited
        # for the writer: storms of 5,000 reminders took 11 to 15 % longer to drain
        # (docs/performance.md). While the database is away, attempts waiting so keep their
        # slots beyond the first max_concurrent_jobs (see work_done): an outage stops new
        # attempts rather than piling up work done but not recorded.
        ctx.work_done()
        words = self.wording
        try:
            done = (task_id, ctx.clock())
            await ctx.writer.run_grouped(words.mark_done, done, until_written=True)
        except asyncio.CancelledError:
            # A shutdown while the database is away (drain cancels what outlasts its timeout).
            logger.error(
                "%s %s: %s, but not yet marked %s as the service stops; unless the database "
                "takes the writer's last try, it %s after the restart",
                words.noun,
                task_id,
                words.done,
                words.recorded,
                words.again,
            )
            raise
        ctx.attempt_ended(AttemptOutcome.SUCCESS)
        return result

    async def _failed(
        self, ctx: JobContext, attempt: TaskAttempt, rules: policy.TaskPolicy, exc: Exception
    ) -> None:
        """Record a retry (and raise RetryLater) or the failure; raise Superseded when the
        task has moved on meanwhile (see attempts._still_running): nothing is recorded."""
        now = ctx.clock()
        decision = policy.after_failure(exc, attempt.attempts, rules, now, _jitter)
        if isinstance(decision, policy.Retry):
            retry = partial(
                attempts.record_retry,
                task_id=attempt.id,
                attempt=attempt.attempts,
                now=now,
                retry_at=decision.at,
                error=decision.error,
            )
            recorded = await ctx.writer.run(retry, until_written=True)
            reason = f"attempt {attempt.attempts}: {decision.error}"
            if not recorded:
                ctx.attempt_ended(AttemptOutcome.SUPERSEDED)
                raise Superseded(f"{reason}; {SUPERSEDED}") from exc
            ctx.attempt_ended(AttemptOutcome.ERROR)
            raise RetryLater(decision.at, reason) from exc
        failed = partial(
            attempts.mark_failed,
            task_id=attempt.id,
            attempt=attempt.attempts,
            now=now,
            error=decision.error,
        )
        if not await ctx.writer.run(failed, until_written=True):
            ctx.attempt_ended(AttemptOutcome.SUPERSEDED)
            raise Superseded(f"attempt {attempt.attempts}: {decision.error}; {SUPERSEDED}") from exc
