"""The task policy: retries after a failure, and the late window, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_app.tasks.policy import (
    Fail,
    JobFailure,
    Retry,
    TaskPolicy,
    TaskState,
    after_failure,
    lateness,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = TaskPolicy(max_attempts=3, retry_base_s=30, retry_max_s=600, late_window=None)


class Midpoint(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def test_a_transient_failure_with_attempts_left_is_retried_after_the_backoff() -> None:
    decision = after_failure(JobFailure("timed out", transient=True), 2, POLICY, NOW, Midpoint())
    assert decision == Retry(NOW + timedelta(seconds=60), "timed out")


def test_the_last_attempt_fails_with_how_many_were_made() -> None:
    decision = after_failure(JobFailure("timed out", transient=True), 3, POLICY, NOW, Midpoint())
    assert decision == Fail("gave up after 3 attempts: timed out")


def test_a_permanent_failure_fails_at_once() -> None:
    decision = after_failure(
        JobFailure("550 no such user", transient=False), 1, POLICY, NOW, Midpoint()
    )
    assert decision == Fail("permanent error: 550 no such user")


@pytest.mark.parametrize(
    ("retry_unexpected", "expected"),
    [
        (False, Fail("permanent error: KeyError: 'x'")),
        (True, Retry(NOW + timedelta(seconds=30), "KeyError: 'x'")),
    ],
)
def test_an_unexpected_exception_is_retried_only_if_the_job_says_so(
    retry_unexpected: bool, expected: Retry | Fail
) -> None:
    policy = TaskPolicy(3, 30, 600, None, retry_unexpected=retry_unexpected)
    assert after_failure(KeyError("x"), 1, policy, NOW, Midpoint()) == expected


def state(**changes: object) -> TaskState:
    fields: dict[str, object] = {
        "run_at": NOW - timedelta(hours=2),
        "requeued_at": None,
        "attempts": 0,
        "last_error": None,
        "last_attempt_at": None,
    }
    fields.update(changes)
    return TaskState(**fields)  # type: ignore[arg-type]


def test_within_the_window_or_without_one_a_task_may_start() -> None:
    assert lateness(state(), NOW, timedelta(hours=3)) is None
    assert lateness(state(), NOW, None) is None


def test_past_the_window_a_task_is_missed_with_the_reason() -> None:
    late = lateness(state(), NOW, timedelta(hours=1))
    assert late is not None
    assert late.status == "missed"
    assert "could only be delivered 2h00m00s later" in late.reason
    assert "late-delivery window of 1h00m00s" in late.reason


def test_past_the_window_after_failed_attempts_a_task_has_failed() -> None:
    late = lateness(state(attempts=2, last_error="SMTP down"), NOW, timedelta(hours=1))
    assert late is not None
    assert late.status == "failed"
    assert late.reason.endswith("last error: SMTP down")


def test_an_interrupted_attempt_is_named_as_possibly_delivered() -> None:
    at = NOW - timedelta(hours=2)
    late = lateness(state(attempts=1, last_attempt_at=at), NOW, timedelta(hours=1))
    assert late is not None
    assert late.status == "missed"
    assert "was interrupted and may have delivered it" in late.reason


def test_an_operator_retry_restarts_the_window() -> None:
    assert lateness(state(requeued_at=NOW - timedelta(minutes=5)), NOW, timedelta(hours=1)) is None
