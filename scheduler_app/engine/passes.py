"""When the scheduler passes over the job store next: the back-pressure rule, apart from the
scheduler's loop, threads and APScheduler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Backlog(Protocol):
    """What holds submitted jobs until a slot frees up (the executor)."""

    def waiting(self) -> int:
        """How many submitted jobs wait for a slot."""
        ...

    def call_when_waiting_at_most(self, count: int, callback: Callable[[], None]) -> None:
        """Call callback once, on the loop, as soon as no more than count jobs wait."""
        ...


@dataclass(frozen=True)
class NextPass:
    """wait_s: when the next pass is due by the clock (None: only when woken up).
    resume_at_waiting: also start it as soon as no more than this many jobs wait for a slot
    (None: no such trigger)."""

    wait_s: float | None
    resume_at_waiting: int | None = None


def next_pass(
    pass_wait_s: float | None,
    *,
    woken_during_pass: bool,
    added_due_in_s: float | None,
    waiting: int,
    waiting_limit: int,
    fallback_s: float,
) -> NextPass:
    """Plan the next pass once a pass has ended.

    Args:
        pass_wait_s: the wait that the pass itself asked for (until the next stored job is due;
            None when no job is).
        woken_during_pass: a wake-up was asked for while the pass ran, which it may have missed.
        added_due_in_s: seconds until the earliest job added during the pass is due (negative:
            due already), which the pass may not have seen; None when none was added.
        waiting: how many submitted jobs still wait in the executor for a slot.
        waiting_limit: a pass that would follow at once waits while more than this many do: a
            burst is read as the executor works it off, not all at once.
        fallback_s: then, the longest wait, in case no job ends meanwhile (every slot held by a
            long job).
    """
    wait_s = 0.0 if woken_during_pass else pass_wait_s
    if added_due_in_s is not None:
        added_wait_s = max(added_due_in_s, 0.0)
        if wait_s is None or added_wait_s < wait_s:
            wait_s = added_wait_s
    if wait_s == 0 and waiting > waiting_limit:
        return NextPass(fallback_s, resume_at_waiting=waiting_limit)
    return NextPass(wait_s)
