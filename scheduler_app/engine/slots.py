"""Job slots: how many jobs run at once, and which start next.

Kept apart from the executor's tasks and threads so that the rules can be tested alone: the
executor hands in work to wait for a slot, tells when a job ends or gives its slot up, and starts
what this class says may start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Work = TypeVar("Work")
Handle = TypeVar("Handle", bound=Hashable)


class JobSlots(Generic[Work, Handle]):
    """At most max_running jobs hold a slot; the rest of the work waits, first come first served.

    A job that gave its slot up (its work is done, it only records its outcome) keeps running
    without one, so the next waiting job can start; at most max_running jobs do so at once,
    beyond that a job keeps its slot. `Work` is what waits (a coroutine, say), `Handle` what runs
    (its task).
    """

    def __init__(self, max_running: int) -> None:
        self._max_running = max_running
        self._waiting: deque[Work] = deque()
        self._running: set[Handle] = set()
        # Those of _running that gave their slot up and are ending.
        self._ending: set[Handle] = set()
        # Called once when no more than the given number of jobs wait for a slot.
        self._when_few_waiting: tuple[int, Callable[[], None]] | None = None

    @property
    def holding(self) -> int:
        """How many jobs hold a slot."""
        return len(self._running) - len(self._ending)

    @property
    def waiting(self) -> int:
        """How many jobs wait for a slot."""
        return len(self._waiting)

    def running(self) -> set[Handle]:
        """Every job that has started and not ended, with a slot or without."""
        return set(self._running)

    def wait(self, work: Work) -> None:
        """Queue work behind the work waiting already (see start_waiting)."""
        self._waiting.append(work)

    def start_waiting(self, start: Callable[[Work], Handle], *, stopping: bool = False) -> int:
        """Start waiting work, oldest first, while a slot is free (every one of it when
        stopping: the executor then starts it only to record that it did not run); how many
        were started. `start` turns work into the handle of the running job."""
        started = 0
        while self._waiting and (self.holding < self._max_running or stopping):
            self._running.add(start(self._waiting.popleft()))
            started += 1
        if self._when_few_waiting is not None and self.waiting <= self._when_few_waiting[0]:
            callback = self._when_few_waiting[1]
            self._when_few_waiting = None
            callback()
        return started

    def give_up(self, handle: Handle) -> bool:
        """The job's work is done: its slot goes to the next waiting job, unless max_running
        jobs are ending without a slot already. Whether it was given up; the caller then
        starts waiting work."""
        if handle not in self._running or handle in self._ending:
            return False  # not a running job, or given up already
        if len(self._ending) >= self._max_running:
            return False
        self._ending.add(handle)
        return True

    def ended(self, handle: Handle) -> None:
        """The job returned: its slot, if it still held one, is free; the caller then starts
        waiting work."""
        self._running.discard(handle)
        self._ending.discard(handle)

    def call_when_waiting_at_most(self, count: int, callback: Callable[[], None]) -> None:
        """Call callback once, from start_waiting, as soon as no more than count jobs wait;
        it replaces a callback asked for earlier."""
        self._when_few_waiting = (count, callback)
