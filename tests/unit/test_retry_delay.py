from __future__ import annotations

import random
from datetime import timedelta

from scheduler_app.reminders.job import reminder_policy
from scheduler_app.settings import Settings
from scheduler_app.tasks.policy import JITTER, retry_delay


def test_waits_double_up_to_the_cap_with_bounded_jitter() -> None:
    policy = reminder_policy(Settings())
    rng = random.Random(7)
    for attempt, base in enumerate([30, 60, 120, 240, 480, 960, 1800, 1800], start=1):
        wait = retry_delay(attempt, policy, rng).total_seconds()
        assert base * (1 - JITTER) <= wait <= base * (1 + JITTER)


class Midpoint(random.Random):
    """Jitter fixed at its middle: the waits without noise."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def test_the_default_attempts_span_about_an_hour() -> None:
    policy = reminder_policy(Settings())
    middle = Midpoint()
    total = sum(
        (retry_delay(attempt, policy, middle) for attempt in range(1, policy.max_attempts)),
        timedelta(),
    )
    assert policy.max_attempts == 8
    assert timedelta(minutes=55) <= total <= timedelta(minutes=65)
