"""What happens to a task: pure functions of its state, its job's policy and the time.

No database, thread or clock here: tasks/attempts.py and tasks/runner.py apply these decisions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# +-20 %: tasks that failed together do not all come back at the same instant.
JITTER = 0.2


class JobFailure(Exception):
    """A failure that a job function understands: `transient` says whether trying again may
    succeed, and the text is the whole error (no exception type is put in front of it)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class TaskPolicy:
    """How a job's tasks are retried and how late they may start."""

    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    # None: a task may start however late it is.
    late_window: timedelta | None
    # Whether an exception other than JobFailure is worth another attempt.
    retry_unexpected: bool = False


def retry_delay(attempt: int, policy: TaskPolicy, rng: random.Random) -> timedelta:
    """Wait after failed attempt number `attempt` (1-based): exponential, capped, jittered.

    With the reminders' defaults (30 s doubling, capped at 30 min, 8 attempts) the waits are
    about 30 s, 1, 2, 4, 8, 16 and 30 min: roughly an hour from the first to the last attempt.
    """
    base = min(policy.retry_base_s * 2 ** (attempt - 1), policy.retry_max_s)
    return timedelta(seconds=base * rng.uniform(1 - JITTER, 1 + JITTER))


@dataclass(frozen=True)
class Retry:
    at: datetime
    error: str


@dataclass(frozen=True)
class Fail:
    error: str


def after_failure(
    exc: Exception, attempt: int, policy: TaskPolicy, now: datetime, rng: random.Random
) -> Retry | Fail:
    """What follows a failed attempt (number `attempt`, 1-based): another one later, or
    'failed' with the reason."""
    if isinstance(exc, JobFailure):
        error, transient = str(exc), exc.transient
    else:
        error, transient = f"{type(exc).__name__}: {exc}", policy.retry_unexpected
    if transient and attempt < policy.max_attempts:
        return Retry(now + retry_delay(attempt, policy, rng), error)
    why = "permanent error" if not transient else f"gave up after {attempt} attempts"
    return Fail(f"{why}: {error}")


@dataclass(frozen=True)
class TaskState:
    """What the late-window decision reads of a task."""

    run_at: datetime
    requeued_at: datetime | None
    attempts: int
    last_error: str | None
    last_attempt_at: datetime | None


@dataclass(frozen=True)
class TooLate:
    """Past the late window: `status` is 'missed', or 'failed' when earlier attempts failed."""

    status: str
    reason: str


def lateness(task: TaskState, now: datetime, window: timedelta | None) -> TooLate | None:
    """None if the task may still start now; else why not.

    The window counts from the due time, or from an operator's retry when that is later.
    """
    if window is None:
        return None
    since = max(task.run_at, task.requeued_at or task.run_at)
    late = now - since
    if late <= window:
        return None
    reason = (
        f"came due at {since.isoformat()} and could only be delivered "
        f"{_span(late)} later, past the late-delivery window of {_span(window)}"
    )
    if task.last_error:  # earlier attempts failed: it failed, it was not just late
        return TooLate("failed", f"{reason}; last error: {task.last_error}")
    if task.attempts:
        reason += (
            f"; an attempt at {task.last_attempt_at} was interrupted and may have delivered it"
        )
    return TooLate("missed", reason)


def _span(delta: timedelta) -> str:
    minutes, seconds = divmod(int(delta.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s"
