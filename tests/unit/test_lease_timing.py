"""When a leader renews, steps down, and when a follower looks: pure rules of cluster.timing."""

from __future__ import annotations

import pytest

from scheduler_app.cluster.timing import Timing


@pytest.mark.parametrize(
    ("lease_s", "renew", "poll", "step_down"),
    [(10.0, 1.0, 0.5, 10 * 2 / 3), (2.0, 0.5, 0.5, 2 * 2 / 3), (1.0, 0.25, 0.25, 2 / 3)],
)
def test_renewals_fit_several_times_in_the_part_of_the_lease_before_stepping_down(
    lease_s: float, renew: float, poll: float, step_down: float
) -> None:
    timing = Timing(lease_s)
    assert timing.renew_every_s == renew
    assert timing.poll_every_s == poll
    assert timing.step_down_after_s == pytest.approx(step_down)
    # At least two renewals are tried before a leader gives up, and it stops with a third of
    # its lease left.
    assert timing.step_down_after_s >= 2 * timing.renew_every_s
    assert lease_s - timing.step_down_after_s >= lease_s / 3 - 1e-9


def test_a_leader_steps_down_once_its_last_renewal_is_two_thirds_of_a_lease_old() -> None:
    timing = Timing(9.0)
    assert not timing.must_step_down(renewed_at=100.0, now=105.9)
    assert timing.must_step_down(renewed_at=100.0, now=106.0)


def test_processes_are_listed_while_seen_and_forgotten_long_after() -> None:
    timing = Timing(10.0)
    assert timing.report_every_s == 2.0
    assert timing.gone_after_s == 30.0
    assert timing.forgotten_after_s == 100.0
    assert timing.resign_pause_s >= 1.0
