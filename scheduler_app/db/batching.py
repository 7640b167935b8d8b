"""The decisions of the batch writer (see batch_writer), apart from its thread and the database:
how long a batch gathers steps, which steps are held while the database is away and in what
order they are written, and how one batch's steps are grouped."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Holdable(Protocol):
    @property
    def until_written(self) -> bool: ...


class Phased(Hashable, Protocol):
    @property
    def phase(self) -> int: ...


StepT = TypeVar("StepT", bound=Holdable)
GroupT = TypeVar("GroupT", bound=Phased)


@dataclass(frozen=True)
class GatherRules:
    """max_batch: steps committed together at most. busy_within_s: a batch taken this soon after
    the last commit gathers for a while (the writer is busy); one after a quiet spell is written
    at once. patient_s, patient_after: how long a busy batch of patient steps only keeps
    gathering, and after how big a last batch it may."""

    max_batch: int
    busy_within_s: float
    patient_s: float
    patient_after: int

    def start(self, now: float, last_commit_ended: float, last_batch_size: int) -> Gathering | None:
        """How a batch taken now gathers more steps; None: it takes what is queued, no more."""
        if now - last_commit_ended >= self.busy_within_s:
            return None
        # Only after a big batch: under a trickle, waiting would only delay every step.
        patient = last_batch_size >= self.patient_after
        return Gathering(self.max_batch, patient, until=now + self.patient_s)


@dataclass
class Gathering:
    """A batch that lingers for the steps queued meanwhile: once, or, while patient, until it
    is full or its patience ends."""

    max_batch: int
    patient: bool
    until: float

    def keeps_gathering(self, added_patient: Iterable[bool], size: int, now: float) -> bool:
        """After a linger that added steps (whether each is patient) and brought the batch to
        size: whether to linger once more. One impatient step ends the patience for good."""
        self.patient = self.patient and all(added_patient)
        return self.patient and size < self.max_batch and now < self.until


def split_held(steps: Sequence[StepT]) -> tuple[list[StepT], list[StepT]]:
    """The steps to hold (queued until_written) and the others, each in the order given."""
    held = [step for step in steps if step.until_written]
    others = [step for step in steps if not step.until_written]
    return held, others


def one_by_one(steps: Sequence[StepT], commit: Callable[[StepT], list[StepT]]) -> list[StepT]:
    """Commit each step alone (after a batch failed); the steps to hold, in order.

    commit(step) returns the step when it is to be held. Once one is, the later until_written
    steps are held behind it untried: each is written after those queued before it.
    """
    unwritten: list[StepT] = []
    for step in steps:
        if unwritten and step.until_written:
            unwritten.append(step)
        else:
            unwritten += commit(step)
    return unwritten


def next_retry_delay(delay_s: float, max_delay_s: float) -> float:
    """The wait after the next failed try of held steps: doubled, up to max_delay_s."""
    return min(delay_s * 2, max_delay_s)


def group_steps(
    groups: Sequence[GroupT | None],
) -> tuple[list[int], list[tuple[GroupT, list[int]]]]:
    """For the groups of a batch's steps in order (None: a step of its own): the indexes of
    the steps of their own, in order, and each group with its steps' indexes, in ascending
    phase (a step may depend on one of an earlier phase in the same batch)."""
    singles: list[int] = []
    grouped: dict[GroupT, list[int]] = {}
    for index, group in enumerate(groups):
        if group is None:
            singles.append(index)
        else:
            grouped.setdefault(group, []).append(index)
    return singles, sorted(grouped.items(), key=lambda entry: entry[0].phase)
