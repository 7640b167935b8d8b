"""The leadership term under which this process may start the leader's work."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Fence:
    """Set by the elector: `term` while this process leads, None while it does not.

    Every write that starts work (a task's attempt, a recurring job's tick) names the term and
    is refused by the database unless the lease is still held under it: a process that lost the
    lease without knowing yet (a long pause, a partition) starts nothing. `enforced` is False
    only for a job context built outside a running service (a test calling a job directly).
    """

    term: int | None = None
    enforced: bool = True

    @property
    def closed(self) -> bool:
        """Whether this process knows it may not start work."""
        return self.enforced and self.term is None


class Fenced(Exception):
    """The work was not started: this process no longer leads."""
