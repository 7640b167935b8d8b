"""When a process renews, steps down, looks for a free lease, and reports itself: pure rules.

The lease is renewed often (at most every second, four times per lease at least), so that a
renewal that fails is tried again several times before it matters. A leader that has not renewed
for two thirds of the lease steps down: the lease it last renewed has a third of its length left,
on any clock that runs at the database's rate, by the time nothing of it fires any more.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_DOWN_FRACTION = 2 / 3


@dataclass(frozen=True)
class Timing:
    lease_s: float

    @property
    def renew_every_s(self) -> float:
        return min(self.lease_s / 4, 1.0)

    @property
    def poll_every_s(self) -> float:
        """How often a follower looks whether the lease is free: a leader that stops cleanly
        hands over within this, even where no notification reaches the followers."""
        return min(self.lease_s / 4, 0.5)

    @property
    def step_down_after_s(self) -> float:
        return self.lease_s * STEP_DOWN_FRACTION

    @property
    def report_every_s(self) -> float:
        """How often a process writes that it is alive (cluster_processes.last_seen)."""
        return min(self.lease_s / 2, 2.0)

    @property
    def gone_after_s(self) -> float:
        """A process not seen for this long is no longer listed."""
        return max(3 * self.lease_s, 10 * self.report_every_s)

    @property
    def forgotten_after_s(self) -> float:
        """A process not seen for this long is deleted from the list by the leader."""
        return max(10 * self.lease_s, 60.0)

    @property
    def resign_pause_s(self) -> float:
        """After stepping down on request, how long a process leaves the lease to the others."""
        return max(3 * self.poll_every_s, 1.0)

    def must_step_down(self, renewed_at: float, now: float) -> bool:
        """Whether a leader whose last renewal was sent at renewed_at (monotonic) must stop.

        The renewal's own send time counts, not its answer's: the database extended the lease
        from a moment no earlier than that.
        """
        return now - renewed_at >= self.step_down_after_s
