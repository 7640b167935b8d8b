"""When the scheduler passes over the job store next: at once while due jobs remain, unless the
executor has too many of them waiting for a slot already."""

from __future__ import annotations

import pytest

from scheduler_app.engine.passes import NextPass, next_pass

LIMIT = 4
FALLBACK_S = 2.0


def plan(
    pass_wait_s: float | None,
    *,
    woken: bool = False,
    added_due_in_s: float | None = None,
    waiting: int = 0,
) -> NextPass:
    return next_pass(
        pass_wait_s,
        woken_during_pass=woken,
        added_due_in_s=added_due_in_s,
        waiting=waiting,
        waiting_limit=LIMIT,
        fallback_s=FALLBACK_S,
    )


@pytest.mark.parametrize("pass_wait_s", [None, 0.0, 30.0])
def test_the_pass_own_wait_stands_when_nothing_happened_meanwhile(
    pass_wait_s: float | None,
) -> None:
    assert plan(pass_wait_s) == NextPass(pass_wait_s)


@pytest.mark.parametrize("pass_wait_s", [None, 30.0])
def test_a_wake_up_during_the_pass_runs_the_next_at_once(pass_wait_s: float | None) -> None:
    assert plan(pass_wait_s, woken=True) == NextPass(0.0)


@pytest.mark.parametrize(
    ("pass_wait_s", "added_due_in_s", "wait_s"),
    [
        (None, 5.0, 5.0),  # nothing stored was due: the new job is
        (30.0, 5.0, 5.0),  # the new job is due first
        (3.0, 5.0, 3.0),  # a stored job is due first
        (30.0, -1.0, 0.0),  # the new job is due already
    ],
)
def test_a_job_added_during_the_pass_is_waited_for(
    pass_wait_s: float | None, added_due_in_s: float, wait_s: float
) -> None:
    assert plan(pass_wait_s, added_due_in_s=added_due_in_s) == NextPass(wait_s)


def test_a_wake_up_beats_a_job_added_later() -> None:
    assert plan(30.0, woken=True, added_due_in_s=5.0) == NextPass(0.0)


def test_with_few_waiting_for_a_slot_the_next_pass_follows_at_once() -> None:
    assert plan(0.0, waiting=LIMIT) == NextPass(0.0)


@pytest.mark.parametrize(
    ("pass_wait_s", "woken", "added_due_in_s"),
    [(0.0, False, None), (30.0, True, None), (None, False, -1.0)],
)
def test_with_many_waiting_the_next_pass_waits_for_them_to_be_few(
    pass_wait_s: float | None, woken: bool, added_due_in_s: float | None
) -> None:
    waited = plan(pass_wait_s, woken=woken, added_due_in_s=added_due_in_s, waiting=LIMIT + 1)
    assert waited == NextPass(FALLBACK_S, resume_at_waiting=LIMIT)


def test_many_waiting_do_not_delay_a_pass_that_is_not_due_yet() -> None:
    assert plan(10.0, waiting=100) == NextPass(10.0)
    assert plan(None, waiting=100) == NextPass(None)
